"""What mmengine's Runner leaves in a work dir, read back: the test metrics json of
``tools/test.py`` and the training scalars (``vis_data/scalars.json``)."""
import glob
import json
import os.path as osp
from typing import List


class NoRecordError(FileNotFoundError):
    """A work dir without the record asked for (the run did not get that far)."""


def _latest(pattern: str, what: str, work_dir: str) -> str:
    files = sorted(glob.glob(pattern))
    if not files:
        raise NoRecordError(f'no {what} under {work_dir}')
    return files[-1]


def test_metrics(work_dir: str) -> dict:
    """The metrics (``mIoU``, ``aAcc``, ...) of the latest test run under ``work_dir``: the
    last line of ``<work_dir>/<timestamp>/<timestamp>.json``."""
    path = _latest(osp.join(work_dir, '*', '*.json'), 'metrics json of a test', work_dir)
    with open(path) as f:
        return json.loads(f.readlines()[-1])


def train_scalars(train_dir: str) -> List[dict]:
    """Every record mmengine logged in the latest training run under ``train_dir`` (one dict
    per logged iteration or validation)."""
    path = _latest(osp.join(train_dir, '*', 'vis_data', 'scalars.json'),
                   'vis_data/scalars.json of a training run', train_dir)
    with open(path) as f:
        return [json.loads(line) for line in f]
