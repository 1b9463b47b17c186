"""The offline wheelhouse (docs/install.md, "Offline installation"): making one on a machine that
reaches the package registry (``download_wheelhouse``), and checking one before a set-up uses it
(``check_wheelhouse``). Its manifest, ``wheelhouse.json``, records the Python, the platforms, the
torch (or none), every package, the sha256 of ``requirements/constraints.txt`` and the files.
"""
import hashlib
import json
import platform
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List

from .common import (BUILD_TOOLS, CONSTRAINTS, RUNTIME_REQUIREMENTS, TEST_REQUIREMENTS,
                     TORCH_PACKAGES, SetupError, Settings, log, pin, read_requirements,
                     requirement_name, run)

WHEELHOUSE_MANIFEST = 'wheelhouse.json'
# sha256 of PyPI's mmcv source archives (the only file PyPI has of a release), by file name; a
# download must match. A new mmcv pin in constraints.txt needs its archive's sha256 here.
MMCV_SDIST_SHA256 = {
    'mmcv-2.1.0.tar.gz': 'd387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f',
}
# mmcv's install_requires (its requirements/runtime.txt, plus the opencv its setup.py adds): a
# wheelhouse resolves them itself, since pip cannot read an sdist's metadata for another platform.
MMCV_RUNTIME = ['addict', 'mmengine', 'numpy', 'packaging', 'Pillow', 'pyyaml', 'yapf',
                'opencv-python']


def mmcv_sdist() -> str:
    """File name of the source archive of the pinned mmcv: 'mmcv-<version>.tar.gz'."""
    return f'mmcv-{pin("mmcv")}.tar.gz'


def mmcv_sdist_sha256() -> str:
    """The recorded sha256 of ``mmcv_sdist()``; SetupError if none is recorded."""
    name = mmcv_sdist()
    if name not in MMCV_SDIST_SHA256:
        raise SetupError(f'no sha256 is recorded for {name}, the mmcv pinned in {CONSTRAINTS}: '
                         f'add PyPI\'s sha256 of it to MMCV_SDIST_SHA256 in {__file__}')
    return MMCV_SDIST_SHA256[name]


def constraints_sha256() -> str:
    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- making one
def fetch_mmcv_sdist(dest: Path, index_url: str) -> Path:
    """Download the pinned mmcv's source archive from ``index_url`` (a PEP 503/691 simple index)
    and check its sha256. ``pip download`` cannot: it builds an sdist's metadata first, and
    mmcv's setup.py needs torch and ``pkg_resources`` for that."""
    sdist, expected = mmcv_sdist(), mmcv_sdist_sha256()
    page_url = f'{index_url.rstrip("/")}/mmcv/'
    req = urllib.request.Request(page_url, headers={
        'Accept': 'application/vnd.pypi.simple.v1+json, text/html;q=0.1'})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read().decode()
        is_json = 'json' in r.headers.get('Content-Type', '')
    if is_json:
        urls = [f['url'] for f in json.loads(body)['files'] if f['filename'] == sdist]
    else:
        urls = [m for m in re.findall(r'href="([^"]+)"', body)
                if m.split('#')[0].endswith('/' + sdist)]
    if not urls:
        raise SetupError(f'{page_url} lists no {sdist}; pass --index-url of an index that '
                         f'mirrors PyPI')
    url = urllib.request.urljoin(page_url, urls[0].split('#')[0])
    target = dest / sdist
    with urllib.request.urlopen(url, timeout=300) as r:
        data = r.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise SetupError(f'{url} has sha256 {digest}, not the {expected} of PyPI\'s '
                         f'{sdist}; refusing it')
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
    mmcv_sdist_sha256()  # a pin without a recorded archive hash stops before any download
    dest.mkdir(parents=True, exist_ok=True)
    roots = [r for r in read_requirements(RUNTIME_REQUIREMENTS)
             + read_requirements(TEST_REQUIREMENTS) + MMCV_RUNTIME + BUILD_TOOLS
             if requirement_name(r) != 'mmcv']  # only an sdist: fetched below
    target = ['--only-binary=:all:', '--python-version', python_version, '--implementation', 'cp']
    for tag in dict.fromkeys(t for p in platforms for t in platform_tags(p)):
        target += ['--platform', tag]
    where = ', '.join(platforms) or f'the local platform ({platform.machine()})'
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
    log(f'downloading {mmcv_sdist()} from {index_url}')
    fetch_mmcv_sdist(dest, index_url)
    torch_pin = next((p for p in pins if p.startswith('torch==')), None)
    manifest = write_manifest(dest, python=python_version, platforms=platforms or [where],
                              torch=torch_pin, packages=pins + [f'mmcv=={pin("mmcv")}'])
    size = sum(f.stat().st_size for f in dest.iterdir()) / 2**20
    torch_note = f'with {torch_pin}' if torch_pin else 'without torch'
    install = f'python3 tools/setup_env.py --wheelhouse {dest}' + (
        '' if torch_pin else ' --system-torch')
    log(f'wheelhouse ready in {time.time() - started:.0f}s: {len(manifest["files"])} files, '
        f'{size:.0f} MiB, {torch_note}. Install with: {install}')


def write_manifest(dest: Path, python: str, platforms: List[str], torch, packages: List[str]):
    """Write ``dest/wheelhouse.json`` for the files in ``dest`` and these pins; return it."""
    manifest = dict(python=python, platforms=platforms, torch=torch, packages=packages,
                    constraints_sha256=constraints_sha256(),
                    files=sorted(f.name for f in dest.iterdir() if f.name != WHEELHOUSE_MANIFEST))
    (dest / WHEELHOUSE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


# ----------------------------------------------------------------------------- using one
def read_manifest(wh: Path) -> dict:
    """The manifest of the wheelhouse ``wh``; SetupError with the command that makes one."""
    try:
        return json.loads((wh / WHEELHOUSE_MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise SetupError(f'{wh} has no readable {WHEELHOUSE_MANIFEST}: make the folder with '
                         f'`python3 tools/setup_env.py --download-wheelhouse {wh}` on a machine '
                         f'that reaches the package registry') from e


def check_wheelhouse(cfg: Settings):
    """Refuse a wheelhouse made for another Python or other pins, or without the torch needed."""
    wh = cfg.wheelhouse
    manifest = read_manifest(wh)
    here = f'{sys.version_info[0]}.{sys.version_info[1]}'
    if manifest['python'] != here:
        raise SetupError(f'the wheelhouse {wh} was made for Python {manifest["python"]}, but this '
                         f'is Python {here}: make one with --python-version {here}, or run the '
                         f'set-up with python{manifest["python"]}')
    if manifest['constraints_sha256'] != constraints_sha256():
        raise SetupError(f'the wheelhouse {wh} was made from other pins than {CONSTRAINTS}: '
                         f'make it again with --download-wheelhouse')
    if not manifest['torch'] and not cfg.system_torch:
        raise SetupError(f'the wheelhouse {wh} has no torch (made with --no-torch): add '
                         f'--system-torch to use the torch of this interpreter, or make one with '
                         f'torch')
    if not (wh / mmcv_sdist()).is_file():
        raise SetupError(f'the wheelhouse {wh} lacks {mmcv_sdist()}: make it again')
    log(f'installing offline from {wh} (Python {manifest["python"]}, '
        f'{manifest["torch"] or "no torch"}); pip\'s index is off')
