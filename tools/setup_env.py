#!/usr/bin/env python3
"""Build the project's environment in ``.venv`` at the repo root, on a bare machine.

Run with any supported system Python: ``python3 tools/setup_env.py`` (``make setup`` does).

Steps (each one timed in the log):

1. check the Python version;
2. create ``.venv`` and install the pinned torch / torchvision pair (``requirements/constraints.txt``);
3. check that mmcv 2.1.0 can be compiled against that torch (its headers must not demand C++20);
4. install mmcv 2.1.0 with its compiled CPU ops: from the wheel cache
   (``~/.cache/mmseg_prompt/wheels/<key>/``, keyed by mmcv, torch, Python and machine) or by building
   it from source (``setuptools<81``, ``--no-build-isolation``, GPU hidden) and caching the wheel;
5. install this package (editable) with the rest of its dependencies;
6. check ``import mmcv.ops, mmseg.models, timm, mmseg_prompt`` in the new environment.

A ``.venv`` is trusted only when it carries the stamp written after step 6, for the same
constraints, ``setup.py`` and Python; anything else is removed and rebuilt. A failed set-up removes
the ``.venv`` it was making. Nothing here needs a GPU.
"""
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / '.venv'
CONSTRAINTS = REPO / 'requirements' / 'constraints.txt'
STAMP_NAME = '.mmseg_prompt_setup.json'
SUPPORTED_PYTHON = ((3, 10), (3, 12))  # inclusive range of (major, minor)
MMCV_VERSION = '2.1.0'
MMCV_SOURCES = 77  # C++ files in the mmcv 2.1.0 CPU build, for the progress line
# The line torch's ATen headers use to refuse pre-C++20 compilers (seen in torch 2.15).
CXX20_ERROR = 'C++20 or later compatible compiler is required'
FINAL_CHECK = 'import mmcv.ops, mmseg.models, timm, mmseg_prompt'


class SetupError(RuntimeError):
    """A set-up failure with a message that says what is wrong and what to do."""


def log(msg):
    print(f'[setup] {msg}', flush=True)


# ----------------------------------------------------------------------------- checks
def check_python(version_info=sys.version_info):
    """Raise SetupError unless ``version_info`` is a supported CPython version."""
    lo, hi = SUPPORTED_PYTHON
    ver = tuple(version_info[:2])
    if not lo <= ver <= hi:
        raise SetupError(
            f'Python {ver[0]}.{ver[1]} is not supported: mmcv {MMCV_VERSION}, mmsegmentation 1.2.2 '
            f'and the pinned torch need Python {lo[0]}.{lo[1]} to {hi[0]}.{hi[1]}. Run the set-up '
            f'with one of those, e.g. `make PYTHON=python3.11 test` or '
            f'`python3.11 tools/setup_env.py`.')


def check_torch_headers(include_dir, torch_version):
    """Raise SetupError if torch's C++ headers refuse the C++17 that mmcv 2.1.0 compiles with."""
    include_dir = Path(include_dir)
    if not include_dir.is_dir():
        raise SetupError(
            f'torch {torch_version} has no C++ headers at {include_dir}, so mmcv {MMCV_VERSION} '
            f'cannot be compiled against it. Use the regular torch wheel pinned in {CONSTRAINTS}.')
    for header in sorted((include_dir / 'c10' / 'macros').glob('*.h')):
        if CXX20_ERROR in header.read_text(errors='ignore'):
            raise SetupError(
                f'torch {torch_version} requires C++20 ({header.relative_to(include_dir)} says '
                f'"{CXX20_ERROR}"), but mmcv {MMCV_VERSION} is built with -std=c++17 and will '
                f'not compile. Pin a torch/torchvision pair before 2.15 in {CONSTRAINTS} '
                f'(the tested pair is torch==2.12.1, torchvision==0.27.1) and run the set-up again.')


def wheel_has_ops(wheel):
    """True if an mmcv wheel carries the compiled ``mmcv/_ext`` extension."""
    with zipfile.ZipFile(wheel) as zf:
        return any(re.match(r'mmcv/_ext\..*(so|pyd)$', n) for n in zf.namelist())


def mmcv_cache_key(torch_version, python_tag, machine):
    """Folder name of a cached mmcv wheel: a build is only valid for this exact combination."""
    safe_torch = re.sub(r'[^A-Za-z0-9.]+', '_', torch_version)
    return f'mmcv-{MMCV_VERSION}_torch-{safe_torch}_{python_tag}_{machine}'


def cache_root():
    base = os.environ.get('MMSEG_PROMPT_CACHE')
    if base:
        return Path(base)
    xdg = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(xdg) / 'mmseg_prompt'


def fingerprint(python_version=None):
    """What a ready .venv was made from: the constraints, setup.py and the Python version."""
    h = hashlib.sha256()
    for f in (CONSTRAINTS, REPO / 'setup.py'):
        h.update(f.read_bytes())
    h.update((python_version or platform.python_version()).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- helpers
def run(cmd, env=None, log_file=None, heartbeat=None):
    """Run ``cmd``; raise SetupError with the command (and a log tail) if it fails."""
    printable = ' '.join(str(c) for c in cmd)
    full_env = dict(os.environ, **(env or {}))
    if log_file is None:
        rc = subprocess.call([str(c) for c in cmd], env=full_env)
        if rc:
            raise SetupError(f'command failed (exit {rc}): {printable}')
        return
    with open(log_file, 'w') as out:
        proc = subprocess.Popen([str(c) for c in cmd], env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
        stop = threading.Event()
        if heartbeat:
            threading.Thread(target=heartbeat, args=(stop, log_file), daemon=True).start()
        rc = proc.wait()
        stop.set()
    if rc:
        tail = ''.join(Path(log_file).read_text(errors='ignore').splitlines(True)[-40:])
        raise SetupError(f'command failed (exit {rc}): {printable}\n--- last lines of '
                         f'{log_file} ---\n{tail}')


def venv_python():
    return VENV / 'bin' / 'python'


def pip(*args, **kw):
    run([venv_python(), '-m', 'pip', 'install', '--disable-pip-version-check', '-q',
         '-c', CONSTRAINTS, *args], **kw)


def venv_eval(code):
    out = subprocess.run([str(venv_python()), '-c', code], capture_output=True, text=True)
    if out.returncode:
        raise SetupError(f'python in {VENV} failed running {code!r}:\n{out.stderr[-2000:]}')
    return out.stdout.strip()


def read_stamp():
    try:
        return json.loads((VENV / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def build_progress(stop, log_file):
    start = time.time()
    while not stop.wait(60):
        # ninja (used by torch's BuildExtension) numbers each compile step as [k/n]
        steps = re.findall(r'^\s*\[(\d+)/(\d+)\]', Path(log_file).read_text(errors='ignore'), re.M)
        done = f'{steps[-1][0]}/{steps[-1][1]}' if steps else f'0/{MMCV_SOURCES}'
        log(f'  ... building mmcv: {done} C++ sources compiled, '
            f'{(time.time() - start) / 60:.0f} min elapsed')


# ----------------------------------------------------------------------------- steps
def install_mmcv(torch_version, py_tag):
    """Install mmcv with compiled ops from the cache, building and caching it if needed."""
    key = mmcv_cache_key(torch_version, py_tag, platform.machine())
    cache_dir = cache_root() / 'wheels' / key
    cached = sorted(cache_dir.glob(f'mmcv-{MMCV_VERSION}-*.whl'))
    if cached and not wheel_has_ops(cached[0]):
        log(f'cached wheel {cached[0]} has no compiled ops (mmcv/_ext); removing it')
        cached[0].unlink()
        cached = []
    if cached:
        log(f'mmcv {MMCV_VERSION}: reusing cached build {cached[0]}')
        pip(cached[0])
        return
    log(f'mmcv {MMCV_VERSION}: no cached build for {key}; compiling its CPU ops from source '
        f'({MMCV_SOURCES} C++ files, about 12-20 min on 2 cores)')
    cache_dir.mkdir(parents=True, exist_ok=True)
    build_log = cache_dir.parent / f'build-{key}.log'
    log(f'  full build log: {build_log}')
    with tempfile.TemporaryDirectory(dir=cache_dir.parent) as tmp:
        env = dict(MMCV_WITH_OPS='1', FORCE_CUDA='0', CUDA_VISIBLE_DEVICES='',
                   MAX_JOBS=str(os.cpu_count() or 1))
        run([venv_python(), '-m', 'pip', 'wheel', '-v', '--no-deps', '--no-build-isolation',
             '--no-cache-dir', '--no-binary', 'mmcv', '-c', CONSTRAINTS, '-w', tmp,
             f'mmcv=={MMCV_VERSION}'], env=env, log_file=build_log, heartbeat=build_progress)
        built = sorted(Path(tmp).glob(f'mmcv-{MMCV_VERSION}-*.whl'))
        if not built:
            raise SetupError(f'the mmcv build produced no wheel; see {build_log}')
        if not wheel_has_ops(built[0]):
            raise SetupError(
                f'the mmcv build produced a wheel without compiled ops (mmcv/_ext), so '
                f'`import mmseg.models` would fail. The build must see torch '
                f'(--no-build-isolation) and MMCV_WITH_OPS=1; see {build_log}')
        # Move into place in one step, so an interrupted build never leaves a wheel to trust.
        final = cache_dir / built[0].name
        os.replace(built[0], final)
    log(f'  cached the build at {final}')
    pip(final)


def check_mmcv_ext():
    has_ext = venv_eval('import importlib.util as u; print(u.find_spec("mmcv._ext") is not None)')
    if has_ext != 'True':
        raise SetupError(
            f'mmcv in {VENV} has no compiled ops (mmcv._ext is missing), and mmsegmentation 1.2.2 '
            f'imports mmcv.ops. Remove the cached wheel under {cache_root() / "wheels"} and run '
            f'the set-up again; it rebuilds mmcv {MMCV_VERSION} with MMCV_WITH_OPS=1.')


def create_venv():
    started = time.time()
    step = time.time()
    py_tag = f'cp{sys.version_info[0]}{sys.version_info[1]}'

    log(f'creating {VENV} with Python {platform.python_version()}')
    run([sys.executable, '-m', 'venv', VENV])
    pip('--upgrade', 'pip', 'setuptools', 'wheel')
    log(f'  done in {time.time() - step:.0f}s')

    step = time.time()
    log('installing the pinned torch / torchvision (regular builds; they run on CPU)')
    pip('torch', 'torchvision')
    torch_version = venv_eval('import torch; print(torch.__version__)')
    include = venv_eval('import torch.utils.cpp_extension as c; print(c.include_paths()[0])')
    check_torch_headers(include, torch_version)
    log(f'  torch {torch_version} in {time.time() - step:.0f}s')

    step = time.time()
    install_mmcv(torch_version, py_tag)
    check_mmcv_ext()
    log(f'  mmcv in {time.time() - step:.0f}s')

    step = time.time()
    log('installing mmseg_prompt (editable) with mmengine, mmsegmentation, timm and test tools')
    pip('--no-build-isolation', '-e', f'{REPO}[tests]')
    log(f'  done in {time.time() - step:.0f}s')

    log(f'checking `{FINAL_CHECK}`')
    venv_eval(FINAL_CHECK)
    (VENV / STAMP_NAME).write_text(json.dumps(dict(
        fingerprint=fingerprint(), torch=torch_version, python=platform.python_version(),
        seconds=round(time.time() - started)), indent=2))
    log(f'environment ready in {time.time() - started:.0f}s: activate with '
        f'`source {VENV.relative_to(REPO)}/bin/activate`')


def main():
    check_python()
    stamp = read_stamp()
    if stamp and stamp.get('fingerprint') == fingerprint() and venv_python().exists():
        try:
            venv_eval(FINAL_CHECK)
            log(f'{VENV.relative_to(REPO)} is ready (torch {stamp["torch"]}); nothing to do')
            return
        except SetupError as e:
            log(f'{VENV} is stamped but broken ({str(e).splitlines()[-1]}); rebuilding it')
    if VENV.exists():
        why = 'it was made from other pins' if stamp else 'it has no completion stamp'
        log(f'removing {VENV} ({why})')
        shutil.rmtree(VENV)
    try:
        create_venv()
    except BaseException:
        # Never leave a half-made environment that a later run could mistake for a ready one.
        shutil.rmtree(VENV, ignore_errors=True)
        log(f'set-up failed; removed the half-made {VENV}')
        raise


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
