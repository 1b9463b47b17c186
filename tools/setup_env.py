#!/usr/bin/env python3
"""Build the project's environment in ``.venv`` at the repo root, on a bare machine.

Run with any supported system Python: ``python3 tools/setup_env.py`` (``make setup`` does).

Steps (each one timed in the log):

1. check the Python version;
2. create ``.venv`` and install the torch / torchvision pair pinned in
   ``requirements/constraints.txt`` (the one place for versions), or, with ``--system-torch``,
   use the torch and torchvision of the interpreter that runs this script (a cluster's own CUDA
   build) by pointing the venv at them;
3. check that the pinned mmcv can be compiled against that torch (its headers must not demand
   C++20);
4. install that mmcv with its compiled CPU ops: from the wheel cache
   (``~/.cache/mmseg_prompt/wheels/<key>/``, keyed by mmcv, torch, Python and machine) or by
   building it from source (``setuptools<81``, ``--no-build-isolation``, ninja, GPU hidden)
   and caching the wheel;
5. install this package (editable) with the rest of its dependencies;
6. check ``import mmcv.ops, mmseg.models, timm, mmseg_prompt`` in the new environment.

Air-gapped machines (docs/install.md, "Offline installation"):

- ``--download-wheelhouse DIR [--python-version 3.12] [--platform TAG ...] [--no-torch]``, on a
  machine that reaches the package registry: writes every file steps 2-5 need for that Python and
  platform into DIR (wheels, mmcv's source archive, ``wheelhouse.json``); installs nothing.
- ``--wheelhouse DIR``: steps 1-6 from DIR alone, with pip's index switched off (no network).

A ``.venv`` is trusted only when it carries the stamp written after step 6, for the same
constraints, requirements, ``setup.py`` and Python; anything else is removed and rebuilt. A failed
set-up removes the ``.venv`` it was making. Nothing here needs a GPU.

The steps live in ``tools/setup/`` (standard library only): ``mmcv_build`` (steps 3-4),
``wheelhouse`` (making and checking a wheelhouse) and ``common`` (paths, pins, pip).
"""
import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def _load_setup_package(name='mmseg_prompt_setup'):
    """tools/setup/ as the package ``name``, found by this file's path: no folder goes on
    ``sys.path``, so its modules' generic names can neither shadow nor be shadowed."""
    folder = Path(__file__).resolve().parent / 'setup'
    loaded = sys.modules.get(name)
    if loaded is not None and list(loaded.__path__) == [str(folder)]:
        return loaded
    for key in [k for k in sys.modules if k == name or k.startswith(name + '.')]:
        del sys.modules[key]  # another checkout's copy
    spec = importlib.util.spec_from_file_location(name, folder / '__init__.py',
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


_load_setup_package()
from mmseg_prompt_setup import common, mmcv_build, wheelhouse  # noqa: E402,F401
from mmseg_prompt_setup.common import (BUILD_TOOLS, CONSTRAINTS, DEFAULT_VENV,  # noqa: E402
                                       REPO, RUNTIME_REQUIREMENTS, TEST_REQUIREMENTS,
                                       SetupError, Settings, log, pin, pip, python_eval, run)
from mmseg_prompt_setup.mmcv_build import (check_mmcv_ext, check_torch_headers,  # noqa: E402
                                           install_mmcv)
from mmseg_prompt_setup.wheelhouse import check_wheelhouse, download_wheelhouse  # noqa: E402

STAMP_NAME = '.mmseg_prompt_setup.json'
SUPPORTED_PYTHON = ((3, 10), (3, 12))  # inclusive range of (major, minor)
SYSTEM_TORCH_PTH = 'mmseg_prompt_system_torch.pth'
FINAL_CHECK = 'import mmcv.ops, mmseg.models, timm, mmseg_prompt'


# ----------------------------------------------------------------------------- checks
def check_python(version_info=sys.version_info):
    """Raise SetupError unless ``version_info`` is a supported CPython version."""
    lo, hi = SUPPORTED_PYTHON
    ver = tuple(version_info[:2])
    if not lo <= ver <= hi:
        raise SetupError(
            f'Python {ver[0]}.{ver[1]} is not supported: mmcv {pin("mmcv")}, mmsegmentation '
            f'{pin("mmsegmentation")} and the pinned torch need Python {lo[0]}.{lo[1]} to '
            f'{hi[0]}.{hi[1]}. Run the set-up with one of those, e.g. '
            f'`make PYTHON=python3.11 test` or `python3.11 tools/setup_env.py`.')


def fingerprint(python_version=None):
    """What a ready .venv was made from: the pins, the requirements, setup.py and the Python."""
    h = hashlib.sha256()
    for f in (CONSTRAINTS, RUNTIME_REQUIREMENTS, TEST_REQUIREMENTS, REPO / 'setup.py'):
        h.update(f.read_bytes())
    h.update((python_version or platform.python_version()).encode())
    return h.hexdigest()


def read_stamp(venv: Path = DEFAULT_VENV):
    try:
        return json.loads((venv / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- steps
def host_torch() -> dict:
    """torch and torchvision of the interpreter running this script, and where they live."""
    code = ('import json, os, torch, torchvision; '
            'print(json.dumps(dict(torch=torch.__version__, torchvision=torchvision.__version__, '
            'paths=sorted({os.path.dirname(os.path.dirname(m.__file__)) '
            'for m in (torch, torchvision)}))))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if out.returncode:
        raise SetupError(
            f'--system-torch uses the torch and torchvision of {sys.executable}, but importing '
            f'them failed:\n{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""}\n'
            f'Run the set-up with the interpreter that has your torch (and a torchvision of the '
            f'same release: timm needs it), or drop --system-torch to install the pinned pair.')
    return json.loads(out.stdout)


def install_torch(cfg: Settings):
    """Step 2: the pinned torch/torchvision, or the interpreter's own (``--system-torch``)."""
    if cfg.system_torch:
        host = host_torch()
        site = Path(python_eval(cfg.python, 'import sysconfig; print(sysconfig.get_paths()'
                                            '["purelib"])'))
        # appended after the venv's own site-packages: the venv's pins win for everything else
        (site / SYSTEM_TORCH_PTH).write_text('\n'.join(host['paths']) + '\n')
        log(f'using torch {host["torch"]} and torchvision {host["torchvision"]} of '
            f'{sys.executable} ({", ".join(host["paths"])})')
    else:
        log('installing the pinned torch / torchvision (regular builds; they run on CPU)')
        pip(cfg, 'torch', 'torchvision')
    # one interpreter start: importing torch is the slow part
    torch_version, include = python_eval(
        cfg.python, 'import torch, torch.utils.cpp_extension as c; '
                    'print(torch.__version__); print(c.include_paths()[0])').splitlines()
    check_torch_headers(include, torch_version)
    return torch_version


def create_venv(cfg: Settings):
    started = time.time()
    step = time.time()
    py_tag = f'cp{sys.version_info[0]}{sys.version_info[1]}'
    log(f'creating {cfg.venv} with Python {platform.python_version()}')
    run([sys.executable, '-m', 'venv', cfg.venv])
    pip(cfg, '--upgrade', *BUILD_TOOLS)
    log(f'  done in {time.time() - step:.0f}s')

    step = time.time()
    torch_version = install_torch(cfg)
    log(f'  torch {torch_version} in {time.time() - step:.0f}s')

    step = time.time()
    install_mmcv(cfg, torch_version, py_tag)
    check_mmcv_ext(cfg)
    log(f'  mmcv in {time.time() - step:.0f}s')

    step = time.time()
    log('installing mmseg_prompt (editable) with mmengine, mmsegmentation, timm and test tools')
    pip(cfg, '--no-build-isolation', '-e', f'{REPO}[tests]')
    log(f'  done in {time.time() - step:.0f}s')

    log(f'checking `{FINAL_CHECK}`')
    python_eval(cfg.python, FINAL_CHECK)
    (cfg.venv / STAMP_NAME).write_text(json.dumps(dict(
        fingerprint=fingerprint(), torch=torch_version, python=platform.python_version(),
        mode=cfg.mode, seconds=round(time.time() - started)), indent=2))
    log(f'environment ready in {time.time() - started:.0f}s: activate with '
        f'`source {cfg.venv}/bin/activate`')


def setup(cfg: Settings, explicit_mode: bool):
    """Make ``cfg.venv`` ready, or leave it as is if a completed set-up of these pins made it.

    Without an explicit mode (plain ``make setup``), a ready venv made in any mode is kept, so
    that an offline or system-torch environment is not replaced by a registry install."""
    check_python()
    if cfg.wheelhouse is not None:  # before anything is touched
        check_wheelhouse(cfg)
    stamp = read_stamp(cfg.venv)
    same_pins = stamp and stamp.get('fingerprint') == fingerprint() and cfg.python.exists()
    same_mode = stamp and stamp.get('mode', Settings().mode) == cfg.mode
    if same_pins and (same_mode or not explicit_mode):
        try:
            python_eval(cfg.python, FINAL_CHECK)
            log(f'{cfg.venv} is ready (torch {stamp["torch"]}); nothing to do')
            return
        except SetupError as e:
            log(f'{cfg.venv} is stamped but broken ({str(e).splitlines()[-1]}); rebuilding it')
    if cfg.venv.exists() or cfg.venv.is_symlink():
        why = ('it was made in another mode' if same_pins else
               'it was made from other pins' if stamp else 'it has no completion stamp')
        if cfg.venv.is_symlink():  # never remove what a link points to (another checkout's)
            raise SetupError(f'{cfg.venv} is a link to {os.path.realpath(cfg.venv)}, and {why}: '
                             f'remove the link (the set-up then makes a venv of its own) or '
                             f'pass --venv with another folder')
        log(f'removing {cfg.venv} ({why})')
        shutil.rmtree(cfg.venv)
    try:
        create_venv(cfg)
    except BaseException:
        # Never leave a half-made environment that a later run could mistake for a ready one.
        shutil.rmtree(cfg.venv, ignore_errors=True)
        log(f'set-up failed; removed the half-made {cfg.venv}')
        raise


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Set up the environment in .venv (see the module '
                                'docstring), or download a wheelhouse for an offline set-up.')
    p.add_argument('--venv', type=Path, default=DEFAULT_VENV, help='where to build it')
    p.add_argument('--wheelhouse', type=Path, help='install from this folder only (no network)')
    p.add_argument('--system-torch', action='store_true',
                   help="use this interpreter's torch and torchvision instead of the pinned pair; "
                   'mmcv is built against it')
    g = p.add_argument_group('making a wheelhouse (on a machine that reaches the registry)')
    g.add_argument('--download-wheelhouse', type=Path, metavar='DIR',
                   help='write the files of a set-up into DIR and stop')
    g.add_argument('--python-version', default=f'{sys.version_info[0]}.{sys.version_info[1]}',
                   help='the Python the wheelhouse is for (default: this one)')
    g.add_argument('--platform', action='append', default=[],
                   help="the target's pip platform tag, e.g. manylinux_2_28_x86_64 for glibc "
                   ">= 2.28 on x86-64 (every older manylinux tag is implied; default: the "
                   "local platform's); repeat for several")
    g.add_argument('--no-torch', action='store_true',
                   help='leave torch and torchvision out (for --system-torch machines)')
    g.add_argument('--index-url', default=os.environ.get('PIP_INDEX_URL',
                                                         'https://pypi.org/simple'),
                   help='simple index to fetch the mmcv source archive from')
    args = p.parse_args(argv)
    if args.download_wheelhouse and (args.wheelhouse or args.system_torch):
        p.error('--download-wheelhouse makes a wheelhouse; --wheelhouse/--system-torch use one')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.download_wheelhouse:
        download_wheelhouse(args.download_wheelhouse.resolve(), args.python_version,
                            args.platform, not args.no_torch, args.index_url)
        return
    cfg = Settings(venv=Path(os.path.abspath(args.venv)), system_torch=args.system_torch,
                   wheelhouse=args.wheelhouse.resolve() if args.wheelhouse else None)
    setup(cfg, explicit_mode=args.system_torch or args.wheelhouse is not None)


if __name__ == '__main__':
    # a terminated set-up (CI time-out, kill) unwinds like an error, so its .venv is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except SetupError as e:
        print(f'\n[setup] ERROR: {e}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print('\n[setup] interrupted', file=sys.stderr)
        sys.exit(130)
