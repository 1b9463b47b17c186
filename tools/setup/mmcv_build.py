"""mmcv with its compiled CPU ops, against the venv's torch: the header check, the wheel cache
(``~/.cache/mmseg_prompt/wheels/<key>/``) and the source build (docs/install.md, steps 2-3).

The mmcv version is the one ``requirements/constraints.txt`` pins (``common.pin('mmcv')``).
"""
import os
import platform
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .common import CONSTRAINTS, SetupError, Settings, log, pin, pip, python_eval, run

MMCV_SOURCES = 77  # C++ files in the CPU build of mmcv 2.1.0 (counted), for the progress line
# The line torch's ATen headers use to refuse pre-C++20 compilers (seen in torch 2.15).
CXX20_ERROR = 'C++20 or later compatible compiler is required'


def check_torch_headers(include_dir, torch_version):
    """Raise SetupError if torch's C++ headers refuse the C++17 that mmcv compiles with."""
    include_dir = Path(include_dir)
    mmcv = pin('mmcv')
    if not include_dir.is_dir():
        raise SetupError(
            f'torch {torch_version} has no C++ headers at {include_dir}, so mmcv {mmcv} '
            f'cannot be compiled against it. Use the regular torch wheel pinned in {CONSTRAINTS}.')
    for header in sorted((include_dir / 'c10' / 'macros').glob('*.h')):
        if CXX20_ERROR in header.read_text(errors='ignore'):
            raise SetupError(
                f'torch {torch_version} requires C++20 ({header.relative_to(include_dir)} says '
                f'"{CXX20_ERROR}"), but mmcv {mmcv} is built with -std=c++17 and will '
                f'not compile. Pin a torch/torchvision pair before 2.15 in {CONSTRAINTS} '
                f'(the tested pair is torch=={pin("torch")}, torchvision=={pin("torchvision")}) '
                f'and run the set-up again.')


def wheel_has_ops(wheel):
    """True if an mmcv wheel carries the compiled ``mmcv/_ext`` extension."""
    with zipfile.ZipFile(wheel) as zf:
        return any(re.match(r'mmcv/_ext\..*(so|pyd)$', n) for n in zf.namelist())


def mmcv_cache_key(torch_version, python_tag, machine):
    """Folder name of a cached mmcv wheel: a build is only valid for this exact combination."""
    safe_torch = re.sub(r'[^A-Za-z0-9.]+', '_', torch_version)
    return f'mmcv-{pin("mmcv")}_torch-{safe_torch}_{python_tag}_{machine}'


def cache_root():
    base = os.environ.get('MMSEG_PROMPT_CACHE')
    if base:
        return Path(base)
    xdg = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(xdg) / 'mmseg_prompt'


def build_progress(stop, log_file):
    start = time.time()
    while not stop.wait(60):
        # ninja (used by torch's BuildExtension) numbers each compile step as [k/n]
        steps = re.findall(r'^\s*\[(\d+)/(\d+)\]', Path(log_file).read_text(errors='ignore'), re.M)
        done = f'{steps[-1][0]}/{steps[-1][1]}' if steps else f'0/{MMCV_SOURCES}'
        log(f'  ... building mmcv: {done} C++ sources compiled, '
            f'{(time.time() - start) / 60:.0f} min elapsed')


def check_python_headers(python):
    """Compiling mmcv needs Python.h of the venv's interpreter."""
    include = python_eval(python, 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if not (Path(include) / 'Python.h').is_file():
        raise SetupError(f'{include}/Python.h is missing, and compiling mmcv {pin("mmcv")} '
                         f'needs it: install the Python development headers (Debian/Ubuntu: '
                         f'`apt install python{sys.version_info[0]}.{sys.version_info[1]}-dev`)')


def install_mmcv(cfg: Settings, torch_version, py_tag):
    """Install mmcv with compiled ops from the cache, building and caching it if needed."""
    mmcv = pin('mmcv')
    key = mmcv_cache_key(torch_version, py_tag, platform.machine())
    cache_dir = cache_root() / 'wheels' / key
    cached = sorted(cache_dir.glob(f'mmcv-{mmcv}-*.whl'))
    if cached and not wheel_has_ops(cached[0]):
        log(f'cached wheel {cached[0]} has no compiled ops (mmcv/_ext); removing it')
        cached[0].unlink()
        cached = []
    if cached:
        log(f'mmcv {mmcv}: reusing cached build {cached[0]}')
        pip(cfg, cached[0])
        return
    check_python_headers(cfg.python)
    jobs = os.cpu_count() or 1
    log(f'mmcv {mmcv}: no cached build for {key}; compiling its CPU ops from source '
        f'({MMCV_SOURCES} C++ files, {jobs} jobs; about 10-20 min on 2 cores, depending on '
        f'the machine)')
    cache_dir.mkdir(parents=True, exist_ok=True)
    build_log = cache_dir.parent / f'build-{key}.log'
    log(f'  full build log: {build_log}')
    with tempfile.TemporaryDirectory(dir=cache_dir.parent) as tmp:
        env = dict(cfg.pip_env(), MMCV_WITH_OPS='1', FORCE_CUDA='0', CUDA_VISIBLE_DEVICES='',
                   MAX_JOBS=str(jobs))
        run([cfg.python, '-m', 'pip', 'wheel', '-v', '--no-deps', '--no-build-isolation',
             '--no-cache-dir', '--no-binary', 'mmcv', '-c', cfg.constraints(), '-w', tmp,
             f'mmcv=={mmcv}'], env=env, log_file=build_log, heartbeat=build_progress)
        built = sorted(Path(tmp).glob(f'mmcv-{mmcv}-*.whl'))
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
    pip(cfg, final)


def check_mmcv_ext(cfg: Settings):
    has_ext = python_eval(cfg.python, 'import importlib.util as u; '
                                      'print(u.find_spec("mmcv._ext") is not None)')
    if has_ext != 'True':
        raise SetupError(
            f'mmcv in {cfg.venv} has no compiled ops (mmcv._ext is missing), and mmsegmentation '
            f'{pin("mmsegmentation")} imports mmcv.ops. Remove the cached wheel under '
            f'{cache_root() / "wheels"} and run the set-up again; it rebuilds mmcv {pin("mmcv")} '
            f'with MMCV_WITH_OPS=1.')
