"""The pinned numerics (mmseg_prompt/utils/pinned_numerics.py): the environment they give a child
process, the record that says whether they held, and, through the pretraining tool as a user
runs it, the same trunk file whatever the cores available and the caps set from outside."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from mmseg_prompt.testing.tiny_trunk import file_sha256
from mmseg_prompt.utils.pinned_numerics import (PINNED_THREADS, X86_KERNEL_PINS, pins_apply,
                                                pins_held, pinned_environment)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_pinned_environment_sets_the_pins_over_the_users_values_and_keeps_the_rest():
    outside = {'PATH': '/bin', 'ATEN_CPU_CAPABILITY': 'avx512', 'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE',
               'MKL_ENABLE_INSTRUCTIONS': 'AVX2', 'OMP_NUM_THREADS': '7'}
    env = pinned_environment(outside, machine='x86_64')
    assert env == {'PATH': '/bin', 'MKL_ENABLE_INSTRUCTIONS': 'AVX2', 'OMP_NUM_THREADS': '2',
                   'MKL_NUM_THREADS': '2', 'ATEN_CPU_CAPABILITY': 'avx2',
                   'ONEDNN_MAX_CPU_ISA': 'AVX2', 'MKL_CBWR': 'COMPATIBLE'}
    assert outside['ATEN_CPU_CAPABILITY'] == 'avx512'  # a copy: the caller's mapping is kept
    # elsewhere the x86-64 caps do not exist: the threads only, and no cap of the user's is kept
    arm = pinned_environment(outside, machine='aarch64')
    assert arm == {'PATH': '/bin', 'MKL_ENABLE_INSTRUCTIONS': 'AVX2', 'OMP_NUM_THREADS': '2',
                   'MKL_NUM_THREADS': '2'}
    assert pins_apply('AMD64') and pins_apply('x86_64') and not pins_apply('arm64')


def held_record(**changes):
    record = dict(machine='x86_64', cpu_capability='AVX2', onednn_max_cpu_isa='AVX2',
                  mkl_cbwr='COMPATIBLE', threads=PINNED_THREADS, deterministic=True,
                  torch='2.12.1', mkl='2024.2', onednn='3.11.2')
    record.update(changes)
    return record


def test_pins_held_names_the_pin_that_did_not_hold():
    assert pins_held(held_record()) is None
    assert 'aarch64, not x86-64' in pins_held(held_record(machine='aarch64'))
    assert 'this CPU has no AVX2' in pins_held(held_record(cpu_capability='DEFAULT'))
    assert pins_held(held_record(mkl_cbwr=None)) == \
        "MKL_CBWR was None, not the pinned 'COMPATIBLE'"
    assert 'ONEDNN_MAX_CPU_ISA' in pins_held(held_record(onednn_max_cpu_isa='AVX512_CORE'))
    assert pins_held(held_record(threads=1)) == '1 threads ran, not the pinned 2'
    assert 'deterministic' in pins_held(held_record(deterministic=False))


def first_cpu_only():
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


@pytest.mark.slow  # two pretraining tools in fresh interpreters
@pytest.mark.skipif(not pins_apply(), reason='the kernel pins are x86-64 ISA caps')
def test_pinned_pretraining_makes_the_same_trunk_on_one_core_and_under_outside_caps(tmp_path):
    """tools/pretrain_tiny_trunk.py --deterministic under the pinned environment, as the
    comparison tool runs it: once with every core of the machine, once restricted to one core
    (torch's own default would then run one thread) with caps set from outside as an AVX2-only
    machine would have them. Both write the same bytes, and each record shows the pins held."""
    cmd = [sys.executable, osp.join(REPO, 'tools', 'pretrain_tiny_trunk.py'), '--steps', '4',
           '--batch-size', '8', '--deterministic', '--force']
    outside = {'ATEN_CPU_CAPABILITY': 'avx512', 'ONEDNN_MAX_CPU_ISA': 'AVX2',
               'MKL_ENABLE_INSTRUCTIONS': 'AVX2'}
    digests, records = {}, {}
    for name, extra, preexec in (('all cores', {}, None),
                                 ('one core, outside caps', outside, first_cpu_only)):
        env = pinned_environment({**os.environ, **extra})
        res = subprocess.run(cmd + ['--cache-dir', str(tmp_path / name)], cwd=REPO, env=env,
                             capture_output=True, text=True, preexec_fn=preexec)
        assert res.returncode == 0, res.stderr[-2000:]
        path = res.stdout.strip().splitlines()[-1]
        info = json.loads(open(osp.splitext(path)[0] + '.json').read())
        digests[name], records[name] = file_sha256(path), info['numerics']
        assert info['sha256'] == digests[name]
    for record in records.values():
        assert pins_held(record) is None, record
        assert record['mkl_cbwr'] == X86_KERNEL_PINS['MKL_CBWR'] and record['threads'] == 2
    assert digests['all cores'] == digests['one core, outside caps']
