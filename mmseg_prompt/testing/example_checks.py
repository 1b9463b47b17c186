"""The built-in example's two checks (tools/demo.py, docs/user_guides/demo.md): whether the toolkit
worked (``toolkit_failures``, the demo's exit status) and whether its numbers are the README's
(``compare_with_expected``).

Both read the comparison's ``results.json`` (tools/compare_methods.py): ``out['arms'][arm]['runs']``
holds one dict per (trunk, seed) run with ``miou_ss``, ``miou_tta``, ``losses`` and
``checkpoint``; ``out['trunks'][name]`` the trunk's sha256 and ``numerics`` record.
"""
import glob
import os.path as osp
from typing import Dict, List, Optional

import cv2
import numpy as np

from ..utils.pinned_numerics import pins_held
from ..utils.run_records import train_scalars

# an arm "predicts well above chance" at this multiple of chance_miou's value
CHANCE_FACTOR = 1.5
LIBRARY_KEYS = ('torch', 'mkl', 'onednn')


def chance_miou(annotation_dir: str, ignore_index: int = 0) -> float:
    """mIoU (%) expected of a prediction drawn at random with the label frequencies p_k of the
    PNG label files in ``annotation_dir``: class k is hit on p_k^2 of the pixels and claimed or
    true on 2 p_k - p_k^2 of them, so IoU_k = p_k / (2 - p_k), averaged over the classes present
    (``ignore_index``, 0 in ADE20K's files, left out)."""
    counts = np.zeros(256, np.int64)
    files = sorted(glob.glob(osp.join(annotation_dir, '*.png')))
    if not files:
        raise FileNotFoundError(f'no label PNG in {annotation_dir}')
    for path in files:
        counts += np.bincount(cv2.imread(path, cv2.IMREAD_GRAYSCALE).ravel(), minlength=256)
    counts[ignore_index] = 0
    p = counts[counts > 0] / counts.sum()
    return float(np.mean(p / (2 - p)) * 100)


def toolkit_failures(out: dict, work_dir: str, chance: float, overlays: int) -> List[str]:
    """What did not work, in words (an empty list: everything did). Every run of every arm must
    have trained (the mean loss of the second half of training below the first logged loss),
    been tested single-scale and with ``--tta``, and predicted well above chance (both mIoU at
    least ``CHANCE_FACTOR * chance``); ``results.json``, ``results.md`` and ``overlays`` overlay
    PNGs must be in ``work_dir``."""
    failures = []
    floor = CHANCE_FACTOR * chance
    for r in out['arms'].values():
        for run in r['runs']:
            where = f'{r["label"]}, trunk {run["trunk"]}, seed {run["seed"]}'
            losses = [x['loss'] for x in train_scalars(osp.dirname(run['checkpoint']))
                      if 'loss' in x]
            late = run['losses']['loss']
            if not losses or not late < losses[0]:
                failures.append(f'{where}: the loss did not fall (first logged '
                                f'{losses[0] if losses else float("nan"):.3f}, mean of the '
                                f'second half {late:.3f})')
            for key, test in (('miou_ss', 'single-scale'), ('miou_tta', 'multi-scale (--tta)')):
                if key not in run:
                    failures.append(f'{where}: the {test} test did not run')
                elif run[key] < floor:
                    failures.append(f'{where}: {test} mIoU {run[key]:.2f} is not well above '
                                    f'chance ({chance:.2f}; needs {floor:.2f})')
    for name in ('results.json', 'results.md'):
        if not osp.isfile(osp.join(work_dir, name)):
            failures.append(f'{osp.join(work_dir, name)} was not written')
    drawn = len(glob.glob(osp.join(work_dir, 'overlays', '*.png')))
    if drawn != overlays:
        failures.append(f'{drawn} overlays in {osp.join(work_dir, "overlays")}, not {overlays}')
    return failures


def run_table(out: dict) -> Dict[str, Dict[str, Dict[str, float]]]:
    """arm -> "trunk-name seed S" -> {miou_ss, miou_tta}: the numbers the README's table holds."""
    return {arm: {f'{run["trunk"]} seed {run["seed"]}':
                  {k: run[k] for k in ('miou_ss', 'miou_tta') if k in run} for run in r['runs']}
            for arm, r in out['arms'].items()}


def compare_with_expected(out: dict, expected: dict) -> List[str]:
    """Lines to print: first whether ``out`` is identical to ``expected`` (the README's run,
    ``configs/example/demo_expected.json``): its trunk's sha256 and every mIoU, to the last
    digit; where not, which known cause applies (another architecture, a CPU without AVX2,
    unpinned numerics, another torch, MKL or oneDNN build) and each number's difference."""
    trunks = out['trunks']
    name = expected['trunk']['name']
    if name not in trunks:
        return [f'not compared with the README\'s table: it is of trunk {name} (`make demo`\'s '
                f'defaults), this run made {sorted(trunks)}']
    trunk = trunks[name]
    got = run_table(out)
    differences, missing = [], []
    for arm, runs in expected['runs'].items():
        for run, values in runs.items():
            for key, value in values.items():
                here = got.get(arm, {}).get(run, {}).get(key)
                if here is None:
                    missing.append(f'{arm} {run} {key}')
                elif here != value:
                    differences.append(f'  {arm}, {run}, {key}: {here:.2f} here, {value:.2f} in '
                                       f'the README ({here - value:+.2f})')
    same_trunk = trunk['sha256'] == expected['trunk']['sha256']
    if same_trunk and not differences and not missing:
        return [f'identical to the README\'s table: trunk sha256 {trunk["sha256"][:8]}... and '
                f'every mIoU, to the last digit']
    lines = [f'NOT identical to the README\'s table: trunk sha256 {trunk["sha256"][:8]} here, '
             f'{expected["trunk"]["sha256"][:8]} in the README' if not same_trunk else
             'the trunk is the README\'s, but not every mIoU is:']
    lines += differences
    if missing:
        lines.append(f'  not run here: {", ".join(missing)}')
    lines.append('the cause: ' + known_cause(trunk.get('numerics'), expected['numerics']))
    return lines


def known_cause(numerics: Optional[dict], expected: dict) -> str:
    """Which of the known causes of other numbers applies, in words: unpinned numerics, another
    architecture or a CPU without AVX2 (``pins_held``), or another torch, MKL or oneDNN build
    than ``expected``'s; else that none does."""
    if numerics is None:
        return 'the trunk has no numerics record: it was made by an earlier version'
    held = pins_held(numerics)
    if held:
        return held
    builds = [f'{k} {numerics[k]} (the README: {expected[k]})' for k in LIBRARY_KEYS
              if numerics.get(k) != expected[k]]
    if builds:
        return 'another build of the libraries that compute: ' + ', '.join(builds)
    return ('none of the known ones (the pins held, and torch, MKL and oneDNN are the README\'s '
            'builds): please report it with results.json')
