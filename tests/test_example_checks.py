"""The built-in example's checks (mmseg_prompt/testing/example_checks.py, tools/demo.py): the
chance level by hand, what makes the toolkit fail, and the comparison with the README's
numbers with its causes."""
import copy
import importlib.util
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from mmseg_prompt.testing.example_checks import (chance_miou, compare_with_expected,
                                                 toolkit_failures)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
EXPECTED = osp.join(REPO, 'configs', 'example', 'demo_expected.json')
NUMERICS = dict(machine='x86_64', cpu_capability='AVX2', onednn_max_cpu_isa='AVX2',
                mkl_cbwr='COMPATIBLE', threads=2, deterministic=True, torch='2.12.1',
                mkl='2024.2-Product', onednn='3.11.2')


def test_chance_miou_by_hand(tmp_path):
    # 6 labelled pixels (0 is ignored): class 1 on 4, class 2 on 2, so p = (2/3, 1/3) and
    # IoU = p / (2 - p) = (2/3) / (4/3) = 0.5 and (1/3) / (5/3) = 0.2: mIoU 35%
    cv2.imwrite(str(tmp_path / 'a.png'), np.array([[1, 1, 0], [2, 0, 0]], np.uint8))
    cv2.imwrite(str(tmp_path / 'b.png'), np.array([[1, 1, 2]], np.uint8))
    assert chance_miou(str(tmp_path)) == pytest.approx(35.0)
    with pytest.raises(FileNotFoundError, match='no label PNG'):
        chance_miou(str(tmp_path / 'missing'))


def write_run(work, arm, seed, losses):
    """A training work dir as mmengine leaves it: vis_data/scalars.json with ``losses``."""
    train = work / arm / 'pinned-s0' / f'seed{seed}' / 'train'
    scalars = train / '20261205_000000' / 'vis_data' / 'scalars.json'
    scalars.parent.mkdir(parents=True)
    scalars.write_text(''.join(json.dumps(dict(loss=v, iter=25 * (i + 1))) + '\n'
                               for i, v in enumerate(losses)))
    return str(train / 'iter_400.pth')


def finished_work(tmp_path):
    """A work dir whose two arms, two seeds each, trained, tested and drew their overlays."""
    work = tmp_path / 'work'
    arms = {}
    for arm, miou in (('head_only', 40.0), ('vpt', 45.0)):
        runs = [dict(trunk='pinned-s0', seed=s, miou_ss=miou + s, miou_tta=miou + s + 0.5,
                     losses={'loss': 1.2}, checkpoint=write_run(work, arm, s, [4.0, 2.0, 1.1]))
                for s in (0, 1)]
        arms[arm] = dict(label=arm.replace('_', '-'), runs=runs)
    (work / 'overlays').mkdir()
    for i in range(3):
        (work / 'overlays' / f'{i}.png').write_bytes(b'png')
    for name in ('results.json', 'results.md'):
        (work / name).write_text('{}')
    return dict(arms=arms), str(work)


def test_toolkit_failures_names_each_thing_that_did_not_work(tmp_path):
    out, work = finished_work(tmp_path)
    assert toolkit_failures(out, work, chance=14.0, overlays=3) == []
    bad = copy.deepcopy(out)
    bad['arms']['vpt']['runs'][1]['losses']['loss'] = 4.5  # above the first logged 4.0
    del bad['arms']['head_only']['runs'][0]['miou_tta']
    bad['arms']['head_only']['runs'][1]['miou_ss'] = 20.9  # under 1.5 x 14
    os.remove(osp.join(work, 'overlays', '0.png'))
    os.remove(osp.join(work, 'results.md'))
    assert toolkit_failures(bad, work, chance=14.0, overlays=3) == [
        'head-only, trunk pinned-s0, seed 0: the multi-scale (--tta) test did not run',
        'head-only, trunk pinned-s0, seed 1: single-scale mIoU 20.90 is not well above chance '
        '(14.00; needs 21.00)',
        'vpt, trunk pinned-s0, seed 1: the loss did not fall (first logged 4.000, mean of the '
        'second half 4.500)',
        f'{osp.join(work, "results.md")} was not written',
        f'2 overlays in {osp.join(work, "overlays")}, not 3']


def expected_of(out):
    return dict(trunk=dict(name='pinned-s0', sha256='ab' * 32), numerics=NUMERICS,
                runs={arm: {f'pinned-s0 seed {r["seed"]}': dict(miou_ss=r['miou_ss'],
                                                                miou_tta=r['miou_tta'])
                            for r in a['runs']} for arm, a in out['arms'].items()})


def test_compare_with_expected_is_identical_only_to_the_last_digit(tmp_path):
    out, _ = finished_work(tmp_path)
    out['trunks'] = {'pinned-s0': dict(sha256='ab' * 32, numerics=NUMERICS)}
    expected = expected_of(out)
    assert compare_with_expected(out, expected) == [
        'identical to the README\'s table: trunk sha256 abababab... and every mIoU, to the '
        'last digit']
    out['arms']['vpt']['runs'][1]['miou_tta'] += 0.01
    lines = compare_with_expected(out, expected)
    assert lines[0] == 'the trunk is the README\'s, but not every mIoU is:'
    assert lines[1] == '  vpt, pinned-s0 seed 1, miou_tta: 46.51 here, 46.50 in the README (+0.01)'
    assert lines[2].startswith('the cause: none of the known ones')
    del out['arms']['head_only']['runs'][0]['miou_tta']  # a test that did not run
    assert compare_with_expected(out, expected)[1:3] == [
        '  vpt, pinned-s0 seed 1, miou_tta: 46.51 here, 46.50 in the README (+0.01)',
        '  not run here: head_only pinned-s0 seed 0 miou_tta']


def test_compare_with_expected_names_the_known_cause(tmp_path):
    out, _ = finished_work(tmp_path)
    expected = expected_of(out)
    cases = {'aarch64, not x86-64': dict(machine='aarch64', cpu_capability='DEFAULT'),
             'this CPU has no AVX2': dict(cpu_capability='DEFAULT'),
             'torch 2.13.0 (the README: 2.12.1), mkl 2025.0 (the README: 2024.2-Product)':
                 dict(torch='2.13.0', mkl='2025.0')}
    for cause, changes in cases.items():
        out['trunks'] = {'pinned-s0': dict(sha256='cd' * 32, numerics={**NUMERICS, **changes})}
        lines = compare_with_expected(out, expected)
        assert lines[0] == 'NOT identical to the README\'s table: trunk sha256 cdcdcdcd here, ' \
            'abababab in the README'
        assert cause in lines[-1], lines
    out['trunks'] = {'native-s0': dict(sha256='cd' * 32, numerics=NUMERICS)}
    assert compare_with_expected(out, expected)[0].startswith(
        'not compared with the README\'s table: it is of trunk pinned-s0')


def test_the_committed_expectation_is_of_the_demos_arms_seeds_and_pinned_trunk():
    spec = importlib.util.spec_from_file_location('demo', osp.join(REPO, 'tools', 'demo.py'))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    with open(EXPECTED) as f:
        expected = json.load(f)
    assert expected['trunk']['name'] == 'pinned-s0' and len(expected['trunk']['sha256']) == 64
    assert sorted(expected['runs']) == sorted(demo.ARMS)
    for runs in expected['runs'].values():
        assert sorted(runs) == [f'pinned-s0 seed {s}' for s in demo.SEEDS]
        assert all(sorted(v) == ['miou_ss', 'miou_tta'] for v in runs.values())
    # the verdict's arithmetic: the mean of the paired gains, against twice the seed noise
    out = {'arms': {arm: {'runs': [dict(seed=s, miou_ss=m + g) for s, g in ((0, 0), (1, 2))]}
                    for arm, m in (('head_only', 40.0), ('vpt', 43.0))}}
    assert '= +3.00 mIoU' in demo.verdict(out) and 'beyond it' in demo.verdict(out)
    out['arms']['vpt']['runs'][0]['miou_ss'] = 41.0  # gains +1 and +3: 2.00, under 2.6
    assert '= +2.00 mIoU' in demo.verdict(out) and 'not a win' in demo.verdict(out)
    assert '+1.00, +3.00' in demo.verdict(out)
