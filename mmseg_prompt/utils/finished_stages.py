"""What a rerun of a tool that drives ``tools/train.py`` and ``tools/test.py`` can skip: a stage
is done when its outputs are there (``tools/reproduce.py``, ``tools/compare_methods.py``).

- training: done when the final checkpoint ``iter_<max_iters>.pth`` is in its work dir;
  interrupted (to resume with ``tools/train.py --resume``) when mmengine's ``last_checkpoint``
  is there but not the final checkpoint;
- a test: done when ``tools/test.py`` wrote its metrics json under its work dir.

JSON records go through a temporary file and a rename (``write_atomically``), so a killed job
leaves the previous record, never half of one.
"""
import json
import os.path as osp
from typing import NamedTuple, Optional

from .atomic_checkpoint import write_atomically
from .run_records import NoRecordError, test_metrics


class TrainingState(NamedTuple):
    checkpoint: str  # the final checkpoint, iter_<max_iters>.pth in the work dir
    finished: bool  # the final checkpoint is there
    resume: bool  # not finished, but an earlier run left a checkpoint to resume from


def final_checkpoint(train_dir: str, max_iters: int) -> str:
    """The checkpoint mmengine's CheckpointHook writes at the last of ``max_iters``
    iterations (its interval must divide ``max_iters``)."""
    return osp.join(train_dir, f'iter_{max_iters}.pth')


def training_state(train_dir: str, max_iters: int) -> TrainingState:
    """Whether the training in ``train_dir`` of ``max_iters`` iterations is finished, or
    interrupted after a checkpoint (resume it), or neither (train it)."""
    ckpt = final_checkpoint(train_dir, max_iters)
    finished = osp.isfile(ckpt)
    resume = not finished and osp.isfile(osp.join(train_dir, 'last_checkpoint'))
    return TrainingState(ckpt, finished, resume)


def finished_test(test_dir: str) -> Optional[dict]:
    """The metrics (``mIoU``, ``aAcc``, ...) of the test run in ``test_dir``, None if none
    finished there."""
    try:
        return test_metrics(test_dir)
    except NoRecordError:
        return None


def write_json(path: str, data, indent: int = 2) -> None:
    """``data`` as JSON in ``path``, through a temporary and a rename (a killed job leaves the
    previous file)."""
    write_atomically(path, lambda f: f.write(json.dumps(data, indent=indent).encode()))
