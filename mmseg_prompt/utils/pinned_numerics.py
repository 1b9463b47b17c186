"""Pinned CPU numerics: the process environment under which torch's float32 results on x86-64 do
not depend on the CPU model, its vendor or the cores available (docs/advanced_guides/
pinned_numerics.md).

A CPU's float results depend on four choices the libraries make at run time. Each is fixed by one
environment variable, read when the library loads, so the pins are set for a child process
before it starts (``pinned_environment``), never inside a running one:

- ATen's vectorised kernels (``ATEN_CPU_CAPABILITY=avx2``);
- oneDNN's JIT kernels, convolutions (``ONEDNN_MAX_CPU_ISA=AVX2``);
- MKL's GEMM code path, matmuls and linear layers, chosen by vendor as well as ISA
  (``MKL_CBWR=COMPATIBLE``: its conditional numerical reproducibility mode);
- the thread count, which splits reductions (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``).

The fifth pin, torch's deterministic algorithms, is a call (``torch.use_deterministic_algorithms``)
that the tools make themselves: mmengine's ``randomness.deterministic=True`` in training and
testing, ``--deterministic`` in tools/pretrain_tiny_trunk.py.
"""
import os
import platform
import re
from typing import Dict, Mapping, Optional

PINNED = 'pinned'  # its name among the comparison's kernel sets (tools/compare_methods.py)
PINNED_THREADS = 2
# read by ATen, oneDNN and MKL when torch loads; the values of the x86-64 pins
X86_KERNEL_PINS = {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2',
                   'MKL_CBWR': 'COMPATIBLE'}
X86_MACHINES = ('x86_64', 'amd64')


def pins_apply(machine: Optional[str] = None) -> bool:
    """Whether the kernel pins exist for ``machine`` (default: this one's ``platform.machine()``):
    they are x86-64 ISA caps; elsewhere only the thread count and determinism are pinned."""
    return (machine or platform.machine()).lower() in X86_MACHINES


def pinned_environment(env: Mapping[str, str], machine: Optional[str] = None,
                       threads: int = PINNED_THREADS) -> Dict[str, str]:
    """A copy of ``env`` with the pins: ``threads`` for OpenMP and MKL everywhere, and on x86-64
    the kernel caps of ``X86_KERNEL_PINS``, replacing any value ``env`` had for them. Other
    variables (``MKL_ENABLE_INSTRUCTIONS``, ...) are kept: they can only restrict further what
    the pins already restrict."""
    env = dict(env)
    env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
    for name in X86_KERNEL_PINS:
        env.pop(name, None)
    if pins_apply(machine):
        env.update(X86_KERNEL_PINS)
    return env


def library_versions() -> Dict[str, str]:
    """torch's version and the MKL and oneDNN builds inside it (from ``torch.__config__``)."""
    import torch
    config = torch.__config__.show()
    mkl = re.search(r'Math Kernel Library Version (\S+)', config)
    onednn = re.search(r'MKL-DNN v(\S+)', config)
    return dict(torch=torch.__version__, mkl=mkl.group(1) if mkl else 'none',
                onednn=onednn.group(1) if onednn else 'none')


def numerics_record() -> Dict[str, object]:
    """What decides this process's float results: the machine, the kernel set ATen runs, the caps
    oneDNN and MKL read, the thread count, deterministic algorithms, and the library builds."""
    import torch
    return dict(machine=platform.machine(),
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                onednn_max_cpu_isa=os.environ.get('ONEDNN_MAX_CPU_ISA'),
                mkl_cbwr=os.environ.get('MKL_CBWR'), threads=torch.get_num_threads(),
                deterministic=torch.are_deterministic_algorithms_enabled(),
                **library_versions())


def pins_held(record: Mapping[str, object]) -> Optional[str]:
    """None if ``record`` (a ``numerics_record`` of a pinned process) shows every pin in force;
    else why not, in words (another architecture, a CPU without AVX2, another thread count)."""
    if not pins_apply(str(record['machine'])):
        return (f'the machine is {record["machine"]}, not x86-64: the kernel pins are x86-64 ISA '
                f'caps, so its kernels round its own way')
    if record['cpu_capability'] != 'AVX2':
        return (f'torch runs {record["cpu_capability"]} kernels under ATEN_CPU_CAPABILITY=avx2: '
                f'this CPU has no AVX2, so the pinned kernels cannot run on it')
    for name, key in (('ONEDNN_MAX_CPU_ISA', 'onednn_max_cpu_isa'), ('MKL_CBWR', 'mkl_cbwr')):
        if record[key] != X86_KERNEL_PINS[name]:
            return f'{name} was {record[key]!r}, not the pinned {X86_KERNEL_PINS[name]!r}'
    if record['threads'] != PINNED_THREADS:
        return f'{record["threads"]} threads ran, not the pinned {PINNED_THREADS}'
    if not record['deterministic']:
        return 'torch\'s deterministic algorithms were off'
    return None
