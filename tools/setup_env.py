#!/usr/bin/env python3
"""Build the project's environment in ``.venv`` at the repo root, on a bare machine.

Run with any supported system Python: ``python3 tools/setup_env.py`` (``make setup`` does).

Steps (each one timed in the log):

1. check the Python version;
2. create ``.venv`` and install the pinned torch / torchvision pair
   (``requirements/constraints.txt``), or, with ``--system-torch``, use the torch and
   torchvision of the interpreter that runs this script (a cluster's own CUDA build) by pointing
   the venv at them;
3. check that mmcv 2.1.0 can be compiled against that torch (its headers must not demand C++20);
4. install mmcv 2.1.0 with its compiled CPU ops: from the wheel cache
   (``~/.cache/mmseg_prompt/wheels/<key>/``, keyed by mmcv, torch, Python and machine) or by
   building it from source (``setuptools<81``, ``--no-build-isolation``, ninja, GPU hidden)
   and caching the wheel;
5. install this package (editable) with the rest of its dependencies;
6. check ``import mmcv.ops, mmseg.models, timm, mmseg_prompt`` in the new environment.

Air-gapped machines (docs/install.md, "Offline installation"):

- ``--download-wheelhouse DIR [--python-version 3.12] [--platform TAG ...] [--no-torch]``, on a
  machine that reaches the package registry: writes every file steps 2-5 need for that Python and
  platform into DIR (wheels, the mmcv 2.1.0 source archive, ``wheelhouse.json``); installs nothing.
- ``--wheelhouse DIR``: steps 1-6 from DIR alone, with pip's index switched off (no network).

A ``.venv`` is trusted only when it carries the stamp written after step 6, for the same
constraints, requirements, ``setup.py`` and Python; anything else is removed and rebuilt. A failed
set-up removes the ``.venv`` it was making. Nothing here needs a GPU.
"""
import argparse
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
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / '.venv'
CONSTRAINTS = REPO / 'requirements' / 'constraints.txt'
RUNTIME_REQUIREMENTS = REPO / 'requirements' / 'runtime.txt'
TEST_REQUIREMENTS = REPO / 'requirements' / 'tests.txt'
STAMP_NAME = '.mmseg_prompt_setup.json'
SUPPORTED_PYTHON = ((3, 10), (3, 12))  # inclusive range of (major, minor)
MMCV_VERSION = '2.1.0'
MMCV_SOURCES = 77  # C++ files in the mmcv 2.1.0 CPU build, for the progress line
# The mmcv 2.1.0 source archive on PyPI (the only file PyPI has of it), checked when downloaded.
MMCV_SDIST = 'mmcv-2.1.0.tar.gz'
MMCV_SDIST_SHA256 = 'd387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f'
# mmcv 2.1.0's install_requires (its requirements/runtime.txt, plus the opencv its setup.py adds):
# a wheelhouse resolves them itself, since pip cannot read an sdist's metadata for another platform.
MMCV_RUNTIME = ['addict', 'mmengine', 'numpy', 'packaging', 'Pillow', 'pyyaml', 'yapf',
                'opencv-python']
BUILD_TOOLS = ['pip', 'setuptools', 'wheel', 'ninja']  # ninja: a parallel mmcv build
TORCH_PACKAGES = ('torch', 'torchvision')
WHEELHOUSE_MANIFEST = 'wheelhouse.json'
SYSTEM_TORCH_PTH = 'mmseg_prompt_system_torch.pth'
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
                f'(the tested pair is torch==2.12.1, torchvision==0.27.1) and run the set-up '
                f'again.')


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
    """What a ready .venv was made from: the pins, the requirements, setup.py and the Python."""
    h = hashlib.sha256()
    for f in (CONSTRAINTS, RUNTIME_REQUIREMENTS, TEST_REQUIREMENTS, REPO / 'setup.py'):
        h.update(f.read_bytes())
    h.update((python_version or platform.python_version()).encode())
    return h.hexdigest()


def read_requirements(path: Path) -> List[str]:
    """Requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = (ln.split('#')[0].strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln]


def requirement_name(req: str) -> str:
    """The normalised project name of a requirement string (PEP 503): 'Foo_bar>=1' -> 'foo-bar'."""
    name = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', req).group(1)
    return re.sub(r'[-_.]+', '-', name).lower()


def constraints_without(names, dest: Path) -> Path:
    """A copy of the constraints without the pins of ``names`` (the torch a machine brings)."""
    kept = [ln for ln in CONSTRAINTS.read_text().splitlines()
            if not (ln.split('#')[0].strip() and requirement_name(ln) in names)]
    dest.write_text('\n'.join(kept) + '\n')
    return dest


@dataclass
class Settings:
    """Where the venv goes and where its packages come from."""
    venv: Path = DEFAULT_VENV
    wheelhouse: Optional[Path] = None  # install from this folder only, no index
    system_torch: bool = False         # use this interpreter's torch/torchvision

    @property
    def python(self) -> Path:
        return self.venv / 'bin' / 'python'

    @property
    def mode(self) -> dict:
        return dict(system_torch=self.system_torch, wheelhouse=self.wheelhouse is not None)

    def pip_env(self) -> dict:
        """pip's environment: offline from the wheelhouse (no index, no config files) or as is."""
        env = dict(PATH=f'{self.venv / "bin"}{os.pathsep}{os.environ.get("PATH", "")}')
        if self.wheelhouse is not None:
            env.update(PIP_NO_INDEX='1', PIP_FIND_LINKS=str(self.wheelhouse),
                       PIP_CONFIG_FILE=os.devnull)
        return env

    def constraints(self) -> Path:
        if not self.system_torch:
            return CONSTRAINTS
        return constraints_without(TORCH_PACKAGES, self.venv / 'constraints-system-torch.txt')


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


def pip(cfg: Settings, *args, **kw):
    run([cfg.python, '-m', 'pip', 'install', '--disable-pip-version-check', '-q',
         '-c', cfg.constraints(), *args], env=cfg.pip_env(), **kw)


def python_eval(python, code):
    out = subprocess.run([str(python), '-c', code], capture_output=True, text=True)
    if out.returncode:
        raise SetupError(f'{python} failed running {code!r}:\n{out.stderr[-2000:]}')
    return out.stdout.strip()


def read_stamp(venv: Path = DEFAULT_VENV):
    try:
        return json.loads((venv / STAMP_NAME).read_text())
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


# ----------------------------------------------------------------------------- wheelhouse
def fetch_mmcv_sdist(dest: Path, index_url: str) -> Path:
    """Download the mmcv 2.1.0 source archive from ``index_url`` (a PEP 503/691 simple index)
    and check its sha256. ``pip download`` cannot: it builds an sdist's metadata first, and
    mmcv's setup.py needs torch and ``pkg_resources`` for that."""
    page_url = f'{index_url.rstrip("/")}/mmcv/'
    req = urllib.request.Request(page_url, headers={
        'Accept': 'application/vnd.pypi.simple.v1+json, text/html;q=0.1'})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read().decode()
        is_json = 'json' in r.headers.get('Content-Type', '')
    if is_json:
        urls = [f['url'] for f in json.loads(body)['files'] if f['filename'] == MMCV_SDIST]
    else:
        urls = [m for m in re.findall(r'href="([^"]+)"', body)
                if m.split('#')[0].endswith('/' + MMCV_SDIST)]
    if not urls:
        raise SetupError(f'{page_url} lists no {MMCV_SDIST}; pass --index-url of an index that '
                         f'mirrors PyPI')
    url = urllib.request.urljoin(page_url, urls[0].split('#')[0])
    target = dest / MMCV_SDIST
    with urllib.request.urlopen(url, timeout=300) as r:
        data = r.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != MMCV_SDIST_SHA256:
        raise SetupError(f'{url} has sha256 {digest}, not the {MMCV_SDIST_SHA256} of PyPI\'s '
                         f'{MMCV_SDIST}; refusing it')
    target.write_bytes(data)
    return target


def wheelhouse_closure(report: dict, roots: List[str], skip=()) -> List[str]:
    """``name==version`` of every package pip resolved (``--report``) that ``roots`` need,
    following dependencies but not into ``skip`` (so torch's own dependencies stay out)."""
    resolved = {requirement_name(item['metadata']['name']): item['metadata']
                for item in report['install']}
    todo = [requirement_name(r) for r in roots]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen or name in skip or name not in resolved:
            continue
        seen.add(name)
        todo += [requirement_name(r) for r in resolved[name].get('requires_dist') or []]
    return sorted(f'{n}=={resolved[n]["version"]}' for n in seen)


def platform_tags(tag: str) -> List[str]:
    """pip platform tags a machine of ``tag`` runs: 'manylinux_2_28_x86_64' means glibc 2.28, so
    every manylinux_2_N (N <= 28) and the legacy names of 2_17, 2_12 and 2_5 (pip matches each
    tag exactly, and wheels are tagged with the oldest glibc they need). Other tags as given."""
    m = re.fullmatch(r'manylinux_2_(\d+)_(\w+)', tag)
    if not m:
        return [tag]
    newest, arch = int(m.group(1)), m.group(2)
    legacy = {17: 'manylinux2014', 12: 'manylinux2010', 5: 'manylinux1'}
    tags = []
    for n in range(newest, 4, -1):
        tags.append(f'manylinux_2_{n}_{arch}')
        if n in legacy:
            tags.append(f'{legacy[n]}_{arch}')
    return tags


def download_wheelhouse(dest: Path, python_version: str, platforms: List[str], with_torch: bool,
                        index_url: str):
    """Write every file a set-up needs (wheels for ``python_version`` and ``platforms``, the mmcv
    source archive) and a manifest into ``dest``. Uses this interpreter's pip and the index."""
    started = time.time()
    dest.mkdir(parents=True, exist_ok=True)
    roots = [r for r in read_requirements(RUNTIME_REQUIREMENTS)
             + read_requirements(TEST_REQUIREMENTS) + MMCV_RUNTIME + BUILD_TOOLS
             if requirement_name(r) != 'mmcv']  # only an sdist: fetched below
    target = ['--only-binary=:all:', '--python-version', python_version, '--implementation', 'cp']
    for tag in dict.fromkeys(t for p in platforms for t in platform_tags(p)):
        target += ['--platform', tag]
    where = ', '.join(platforms) or f'this machine ({platform.machine()})'
    log(f'resolving the stack for Python {python_version}, {where}, with pip')
    with tempfile.TemporaryDirectory() as tmp:
        report_file = Path(tmp) / 'report.json'
        run([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', '-q',
             '--dry-run', '--ignore-installed', '--target', Path(tmp) / 'target',
             '--report', report_file, '-c', CONSTRAINTS, *target, *roots])
        report = json.loads(report_file.read_text())
    skip = () if with_torch else TORCH_PACKAGES
    pins = wheelhouse_closure(report, roots, skip)
    log(f'downloading {len(pins)} wheels into {dest}')
    run([sys.executable, '-m', 'pip', 'download', '--disable-pip-version-check', '-q',
         '--no-deps', '-d', dest, *target, *pins])
    log(f'downloading {MMCV_SDIST} from {index_url}')
    fetch_mmcv_sdist(dest, index_url)
    torch_pin = next((p for p in pins if p.startswith('torch==')), None)
    manifest = dict(python=python_version, platforms=platforms or [where], torch=torch_pin,
                    packages=pins + ['mmcv==2.1.0'],
                    constraints_sha256=hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest(),
                    files=sorted(f.name for f in dest.iterdir() if f.name != WHEELHOUSE_MANIFEST))
    (dest / WHEELHOUSE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    size = sum(f.stat().st_size for f in dest.iterdir()) / 2**20
    torch_note = f'with {torch_pin}' if torch_pin else 'without torch'
    install = f'python3 tools/setup_env.py --wheelhouse {dest}' + (
        '' if torch_pin else ' --system-torch')
    log(f'wheelhouse ready in {time.time() - started:.0f}s: {len(manifest["files"])} files, '
        f'{size:.0f} MiB, {torch_note}. Install with: {install}')


def check_wheelhouse(cfg: Settings):
    """Refuse a wheelhouse made for another Python or other pins, or without the torch needed."""
    wh = cfg.wheelhouse
    try:
        manifest = json.loads((wh / WHEELHOUSE_MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise SetupError(f'{wh} has no readable {WHEELHOUSE_MANIFEST}: make the folder with '
                         f'`python3 tools/setup_env.py --download-wheelhouse {wh}` on a machine '
                         f'that reaches the package registry') from e
    here = f'{sys.version_info[0]}.{sys.version_info[1]}'
    if manifest['python'] != here:
        raise SetupError(f'the wheelhouse {wh} was made for Python {manifest["python"]}, but this '
                         f'is Python {here}: make one with --python-version {here}, or run the '
                         f'set-up with python{manifest["python"]}')
    if manifest['constraints_sha256'] != hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest():
        raise SetupError(f'the wheelhouse {wh} was made from other pins than {CONSTRAINTS}: '
                         f'make it again with --download-wheelhouse')
    if not manifest['torch'] and not cfg.system_torch:
        raise SetupError(f'the wheelhouse {wh} has no torch (made with --no-torch): add '
                         f'--system-torch to use the torch of this interpreter, or make one with '
                         f'torch')
    if not (wh / MMCV_SDIST).is_file():
        raise SetupError(f'the wheelhouse {wh} lacks {MMCV_SDIST}: make it again')
    log(f'installing offline from {wh} (Python {manifest["python"]}, '
        f'{manifest["torch"] or "no torch"}); pip\'s index is off')


# ----------------------------------------------------------------------------- steps
def install_mmcv(cfg: Settings, torch_version, py_tag):
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
        pip(cfg, cached[0])
        return
    check_python_headers(cfg.python)
    jobs = os.cpu_count() or 1
    log(f'mmcv {MMCV_VERSION}: no cached build for {key}; compiling its CPU ops from source '
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
    pip(cfg, final)


def check_python_headers(python):
    """Compiling mmcv needs Python.h of the venv's interpreter."""
    include = python_eval(python, 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if not (Path(include) / 'Python.h').is_file():
        raise SetupError(f'{include}/Python.h is missing, and compiling mmcv {MMCV_VERSION} '
                         f'needs it: install the Python development headers (Debian/Ubuntu: '
                         f'`apt install python{sys.version_info[0]}.{sys.version_info[1]}-dev`)')


def check_mmcv_ext(cfg: Settings):
    has_ext = python_eval(cfg.python, 'import importlib.util as u; '
                                      'print(u.find_spec("mmcv._ext") is not None)')
    if has_ext != 'True':
        raise SetupError(
            f'mmcv in {cfg.venv} has no compiled ops (mmcv._ext is missing), and mmsegmentation '
            f'1.2.2 imports mmcv.ops. Remove the cached wheel under {cache_root() / "wheels"} and '
            f'run the set-up again; it rebuilds mmcv {MMCV_VERSION} with MMCV_WITH_OPS=1.')


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
    torch_version = python_eval(cfg.python, 'import torch; print(torch.__version__)')
    include = python_eval(cfg.python, 'import torch.utils.cpp_extension as c; '
                                      'print(c.include_paths()[0])')
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
    if cfg.venv.exists():
        why = ('it was made in another mode' if same_pins else
               'it was made from other pins' if stamp else 'it has no completion stamp')
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
                   ">= 2.28 on x86-64 (every older manylinux tag is implied; default: this "
                   "machine's); repeat for several")
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
    cfg = Settings(venv=args.venv.resolve(), system_torch=args.system_torch,
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
