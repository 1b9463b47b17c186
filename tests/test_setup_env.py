"""The set-up script's checks, on inputs made here (they must stop with a clear message)."""
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('setup_env', REPO / 'tools' / 'setup_env.py')
setup_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_env)
common, mmcv_build, wheelhouse = setup_env.common, setup_env.mmcv_build, setup_env.wheelhouse


@pytest.mark.parametrize('version', [(3, 9, 18), (3, 13, 0), (2, 7, 18)])
def test_unsupported_python_is_refused_with_the_fix(version):
    with pytest.raises(common.SetupError) as e:
        setup_env.check_python(version)
    msg = str(e.value)
    assert f'Python {version[0]}.{version[1]} is not supported' in msg
    assert '3.10 to 3.12' in msg and 'PYTHON=' in msg


@pytest.mark.parametrize('version', [(3, 10, 0), (3, 11, 7), (3, 12, 1)])
def test_supported_python_passes(version):
    setup_env.check_python(version)


def test_this_interpreter_is_supported():
    setup_env.check_python(sys.version_info)


def _fake_include(tmp_path, macros_text):
    macros = tmp_path / 'include' / 'c10' / 'macros'
    macros.mkdir(parents=True)
    (macros / 'Macros.h').write_text(macros_text)
    return tmp_path / 'include'


def _pins_in_file(path=None):
    """``{name: version}`` of the ``name==version`` lines of a constraints file, read here."""
    text = (path or REPO / 'requirements' / 'constraints.txt').read_text()
    return dict(re.findall(r'^([A-Za-z0-9_.-]+)==(\S+)\s*$', text, re.M))


CXX20_GUARD = ('#if __cplusplus < 202002L\n#error C++20 or later compatible compiler is required '
               'to use ATen.\n#endif\n')  # the guard torch 2.15's headers carry (docs/install.md)


def test_torch_requiring_cxx20_is_refused(tmp_path):
    inc = _fake_include(tmp_path, CXX20_GUARD)
    with pytest.raises(common.SetupError) as e:
        mmcv_build.check_torch_headers(inc, '2.15.0')
    msg = str(e.value)
    assert 'torch 2.15.0 requires C++20' in msg and 'c10/macros/Macros.h' in msg
    pins = _pins_in_file()  # the tested pair it names is the constraints file's
    assert 'constraints.txt' in msg
    assert f'torch=={pins["torch"]}, torchvision=={pins["torchvision"]}' in msg
    assert f'mmcv {pins["mmcv"]} is built with -std=c++17' in msg


def _other_constraints(tmp_path, monkeypatch, **versions):
    """Point the set-up at a copy of the constraints with ``versions`` changed."""
    text = common.CONSTRAINTS.read_text()
    for name, version in versions.items():
        text, n = re.subn(rf'^{name}==\S+$', f'{name}=={version}', text, flags=re.M)
        assert n == 1, name
    path = tmp_path / 'constraints.txt'
    path.write_text(text)
    monkeypatch.setattr(common, 'CONSTRAINTS', path)
    return path


def test_versions_in_messages_and_names_follow_the_constraints_file(tmp_path, monkeypatch):
    """Change the pins in a copy of the file: the messages, the cache key and the mmcv archive
    follow it (no version is written in the set-up's code)."""
    _other_constraints(tmp_path, monkeypatch, torch='3.1.4', torchvision='1.5.9', mmcv='2.7.1',
                       mmsegmentation='1.8.2')
    with pytest.raises(common.SetupError) as e:
        mmcv_build.check_torch_headers(_fake_include(tmp_path, CXX20_GUARD), '2.15.0')
    assert 'torch==3.1.4, torchvision==1.5.9' in str(e.value) and 'mmcv 2.7.1' in str(e.value)
    with pytest.raises(common.SetupError) as e:
        setup_env.check_python((3, 9, 0))
    assert 'mmcv 2.7.1, mmsegmentation 1.8.2' in str(e.value)
    assert mmcv_build.mmcv_cache_key('2.12.1', 'cp311', 'x86_64').startswith('mmcv-2.7.1_torch-')
    assert wheelhouse.mmcv_sdist() == 'mmcv-2.7.1.tar.gz'


def test_a_missing_pin_is_named_with_the_file(tmp_path, monkeypatch):
    path = tmp_path / 'constraints.txt'
    path.write_text('# no mmcv here\ntorch==9.9.9\n')
    monkeypatch.setattr(common, 'CONSTRAINTS', path)
    assert common.pin('torch') == '9.9.9'
    with pytest.raises(common.SetupError, match=re.escape(f'{path} pins no mmcv: add a line')):
        common.pin('mmcv')


def test_pins_read_from_the_file_match_its_lines():
    pins = {common.requirement_name(k): v for k, v in _pins_in_file().items()}
    assert common.pinned_versions() == pins
    assert {'torch', 'torchvision', 'mmcv', 'mmengine', 'mmsegmentation', 'timm'} <= set(pins)


def test_an_mmcv_pin_without_a_recorded_archive_hash_stops_the_download(tmp_path, monkeypatch):
    """A new mmcv pin needs its source archive's sha256: refused before anything is fetched."""
    _other_constraints(tmp_path, monkeypatch, mmcv='2.7.1')
    dest = tmp_path / 'wh'
    with pytest.raises(common.SetupError, match='no sha256 is recorded for mmcv-2.7.1.tar.gz'):
        wheelhouse.download_wheelhouse(dest, '3.11', [], False, 'http://127.0.0.1:9/simple')
    assert not dest.exists()


def test_no_pinned_version_is_written_outside_the_constraints_file():
    """`name==version` of a pinned package appears nowhere else in the checkout's code, build
    files and docs; the ruff hook of pre-commit (which needs a literal) matches the pin."""
    pins = _pins_in_file()
    found = []
    places = ['setup.py', 'Makefile', 'README.md', 'MANIFEST.in', 'pyproject.toml']
    files = [REPO / p for p in places if (REPO / p).exists()]
    for folder in ('tools', 'mmseg_prompt', 'configs', 'tests', 'docs', '.ci', 'requirements'):
        files += [f for f in (REPO / folder).rglob('*') if f.is_file()
                  and f.suffix in ('.py', '.md', '.txt', '.sh', '.yml', '.yaml', '')]
    for f in files:
        if f == REPO / 'requirements' / 'constraints.txt' or '__pycache__' in f.parts:
            continue
        text = f.read_text(errors='ignore')
        for name, version in pins.items():
            if re.search(rf'\b{re.escape(name)}\s*==\s*{re.escape(version)}(?![\w.])', text,
                         re.I):
                found.append(f'{f.relative_to(REPO)}: {name}=={version}')
    assert not found, found
    hook = (REPO / '.pre-commit-config.yaml').read_text()
    assert re.search(r'ruff-pre-commit\n\s+rev: v(\S+)', hook).group(1) == pins['ruff']


def test_torch_with_cxx17_headers_passes(tmp_path):
    inc = _fake_include(tmp_path, '#if __cplusplus < 201703L\n#error C++17 or later compatible '
                                  'compiler is required to use PyTorch.\n#endif\n')
    mmcv_build.check_torch_headers(inc, '2.13.0')


def test_torch_without_headers_is_refused(tmp_path):
    with pytest.raises(common.SetupError, match='has no C\\+\\+ headers'):
        mmcv_build.check_torch_headers(tmp_path / 'missing', '2.13.0+cpu')


def test_installed_torch_headers_fit_mmcv():
    """The pinned torch is one that the pinned mmcv compiles against."""
    import torch
    import torch.utils.cpp_extension as ext
    mmcv_build.check_torch_headers(ext.include_paths()[0], torch.__version__)


def _wheel(path, names):
    with zipfile.ZipFile(path, 'w') as zf:
        for n in names:
            zf.writestr(n, b'')
    return path


def test_wheel_without_compiled_ops_is_detected(tmp_path):
    lite = _wheel(tmp_path / 'lite.whl', ['mmcv/__init__.py', 'mmcv/ops/__init__.py'])
    full = _wheel(tmp_path / 'full.whl',
                  ['mmcv/__init__.py', 'mmcv/_ext.cpython-311-x86_64-linux-gnu.so'])
    assert not mmcv_build.wheel_has_ops(lite)
    assert mmcv_build.wheel_has_ops(full)


def test_cache_key_separates_torch_and_python_builds():
    a = mmcv_build.mmcv_cache_key('2.12.1+cu130', 'cp311', 'x86_64')
    assert a == f'mmcv-{_pins_in_file()["mmcv"]}_torch-2.12.1_cu130_cp311_x86_64'
    assert a != mmcv_build.mmcv_cache_key('2.13.0+cpu', 'cp311', 'x86_64')
    assert a != mmcv_build.mmcv_cache_key('2.12.1+cu130', 'cp312', 'x86_64')


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv('MMSEG_PROMPT_CACHE', str(tmp_path / 'c'))
    assert mmcv_build.cache_root() == tmp_path / 'c'
    monkeypatch.delenv('MMSEG_PROMPT_CACHE')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'x'))
    assert mmcv_build.cache_root() == tmp_path / 'x' / 'mmseg_prompt'


def test_ready_venv_carries_a_stamp_of_the_current_pins():
    """The .venv that runs these tests was stamped by a completed set-up of these pins."""
    stamp = setup_env.read_stamp()
    assert stamp is not None, 'the .venv has no completion stamp'
    assert stamp['fingerprint'] == setup_env.fingerprint()


def test_a_linked_venv_of_other_pins_is_refused_not_followed(tmp_path):
    """A `.venv` that links to another checkout's venv, stamped for other pins, stops the set-up
    with a message; the venv it points to is left as it is."""
    target = tmp_path / 'other_checkout_venv'
    (target / 'bin').mkdir(parents=True)
    (target / 'bin' / 'python').write_text('')
    (target / setup_env.STAMP_NAME).write_text(json.dumps(dict(fingerprint='0' * 64)))
    link = tmp_path / '.venv'
    link.symlink_to(target)
    with pytest.raises(common.SetupError, match='is a link to .* it was made from other pins'):
        setup_env.setup(common.Settings(venv=link), explicit_mode=False)
    assert (target / setup_env.STAMP_NAME).is_file() and link.is_symlink()


def test_script_refuses_an_unsupported_python_before_touching_anything(tmp_path):
    """Run the real script under a Python it refuses; it must exit 1 with the message."""
    code = ('import sys, runpy; sys.version_info = (3, 9, 0, "final", 0); '
            f'sys.argv = ["setup_env.py"]; runpy.run_path({str(REPO / "tools/setup_env.py")!r}, '
            'run_name="__main__")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 1
    assert 'Python 3.9 is not supported' in out.stderr


def test_help_runs_from_another_folder_on_the_bare_interpreter(tmp_path):
    """`python3 tools/setup_env.py --help` from anywhere, with only the standard library: the
    interpreter under this venv, with no PYTHONPATH and the venv's site-packages out of reach."""
    base = Path(sys.base_prefix) / 'bin' / 'python{}.{}'.format(*sys.version_info[:2])
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    out = subprocess.run([str(base), '-S', str(REPO / 'tools' / 'setup_env.py'), '--help'],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert '--download-wheelhouse DIR' in out.stdout and '--system-torch' in out.stdout


def test_the_setup_modules_neither_shadow_nor_are_shadowed(tmp_path):
    """Modules named `common` and `wheelhouse` earlier on sys.path stay what they are, and the
    set-up's own are loaded from tools/setup/ under `mmseg_prompt_setup` only."""
    for name in ('common', 'wheelhouse', 'mmcv_build'):
        (tmp_path / f'{name}.py').write_text(f'WHO = "decoy {name}"\n')
    code = ('import runpy, sys; sys.path.insert(0, sys.argv[1]); '
            'g = runpy.run_path(sys.argv[2]); import common, wheelhouse; '
            'print(common.WHO, wheelhouse.WHO, g["wheelhouse"].__file__, '
            'sorted(k for k in sys.modules if k.startswith(("mmseg_prompt_setup", "mmcv_build"))))')
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path),
                          str(REPO / 'tools' / 'setup_env.py')], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('decoy common decoy wheelhouse '), out.stdout
    assert f"{REPO / 'tools' / 'setup' / 'wheelhouse.py'} ['mmseg_prompt_setup', " \
           "'mmseg_prompt_setup.common', 'mmseg_prompt_setup.mmcv_build', " \
           "'mmseg_prompt_setup.wheelhouse']" in out.stdout


# ----------------------------------------------------------------------------- offline set-up
def test_platform_tag_implies_every_older_manylinux():
    tags = wheelhouse.platform_tags('manylinux_2_28_x86_64')
    assert tags[0] == 'manylinux_2_28_x86_64'
    for t in ('manylinux_2_27_x86_64', 'manylinux_2_18_x86_64', 'manylinux_2_17_x86_64',
              'manylinux2014_x86_64', 'manylinux2010_x86_64', 'manylinux1_x86_64'):
        assert t in tags
    assert 'manylinux_2_29_x86_64' not in tags
    assert not any('aarch64' in t for t in tags)
    assert wheelhouse.platform_tags('win_amd64') == ['win_amd64']


def _report(graph, versions=None):
    """A pip --report with packages ``graph`` {name: [requirement strings]}."""
    return dict(install=[dict(metadata=dict(name=n, version=(versions or {}).get(n, '1.0'),
                                            requires_dist=reqs)) for n, reqs in graph.items()])


def test_wheelhouse_closure_leaves_out_torch_and_what_only_torch_needs():
    report = _report({
        'timm': ['torch', 'torchvision', 'PyYAML', 'safetensors>=0.4'],
        'torch': ['nvidia-nccl-cu13==2.29.7; platform_system == "Linux"', 'sympy>=1.13',
                  'typing-extensions>=4'],
        'torchvision': ['torch==2.11.0', 'numpy', 'pillow'],
        'PyYAML': [], 'safetensors': [], 'nvidia-nccl-cu13': [], 'sympy': ['mpmath'],
        'mpmath': [], 'numpy': [], 'pillow': [],
        'mmengine': ['numpy', 'typing_extensions; python_version < "3.13"'],
        'typing-extensions': []}, versions={'timm': '1.0.19'})
    without = wheelhouse.wheelhouse_closure(report, ['timm', 'mmengine'], skip=('torch',
                                                                              'torchvision'))
    assert without == ['mmengine==1.0', 'numpy==1.0', 'pyyaml==1.0', 'safetensors==1.0',
                       'timm==1.0.19', 'typing-extensions==1.0']
    full = wheelhouse.wheelhouse_closure(report, ['timm', 'mmengine'])
    assert {'torch==1.0', 'torchvision==1.0', 'nvidia-nccl-cu13==1.0', 'sympy==1.0',
            'mpmath==1.0', 'pillow==1.0'} <= set(full)


def test_constraints_without_drops_only_the_named_pins(tmp_path):
    out = common.constraints_without(('torch', 'torchvision'), tmp_path / 'c.txt')
    pins = [ln for ln in out.read_text().splitlines() if ln and not ln.startswith('#')]
    names = {common.requirement_name(p) for p in pins}
    assert 'torch' not in names and 'torchvision' not in names
    assert {'mmcv', 'mmengine', 'mmsegmentation', 'timm', 'numpy'} <= names


def _wheelhouse(folder, **manifest):
    """A wheelhouse folder with a manifest (of this Python and pins unless ``manifest`` says
    otherwise) and the mmcv archive's name."""
    wh = folder / 'wh'
    wh.mkdir(parents=True)
    base = dict(python=f'{sys.version_info[0]}.{sys.version_info[1]}', platforms=['x'],
                torch='torch==2.11.0', packages=[], files=[], constraints_sha256=hashlib.sha256(
                    common.CONSTRAINTS.read_bytes()).hexdigest())
    base.update(manifest)
    (wh / wheelhouse.WHEELHOUSE_MANIFEST).write_text(json.dumps(base))
    (wh / wheelhouse.mmcv_sdist()).write_bytes(b'')
    return wh


def test_wheelhouse_for_this_python_and_pins_passes(tmp_path):
    wheelhouse.check_wheelhouse(common.Settings(wheelhouse=_wheelhouse(tmp_path)))
    no_torch = _wheelhouse(tmp_path / 'b', torch=None)
    wheelhouse.check_wheelhouse(common.Settings(wheelhouse=no_torch, system_torch=True))


@pytest.mark.parametrize('change, message', [
    (dict(python='3.9'), 'was made for Python 3.9'),
    (dict(constraints_sha256='0' * 64), 'made from other pins'),
    (dict(torch=None), 'has no torch (made with --no-torch): add --system-torch'),
])
def test_wheelhouse_that_does_not_fit_is_refused(tmp_path, change, message):
    with pytest.raises(common.SetupError, match=re.escape(message)):
        wheelhouse.check_wheelhouse(common.Settings(wheelhouse=_wheelhouse(tmp_path, **change)))


def test_folder_without_manifest_is_refused_with_the_command_that_makes_one(tmp_path):
    with pytest.raises(common.SetupError, match='--download-wheelhouse'):
        wheelhouse.check_wheelhouse(common.Settings(wheelhouse=tmp_path))


def _torch_only_interpreter(dest):
    """A venv (without pip) holding torch, torchvision and what they need (symlinks into this
    venv), standing for a cluster interpreter that brings its own torch and nothing of this
    project's stack. Returns its python, its site-packages and the distributions linked."""
    from importlib import metadata
    subprocess.run([str(Path(sys.base_prefix) / 'bin' / 'python{}.{}'.format(
        *sys.version_info[:2])), '-m', 'venv', '--without-pip', str(dest)], check=True)
    site = dest / 'lib' / 'python{}.{}'.format(*sys.version_info[:2]) / 'site-packages'
    todo, seen = ['torch', 'torchvision'], set()
    while todo:
        name = common.requirement_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # a requirement whose marker is false here
            continue
        seen.add(name)
        todo += dist.requires or []  # extras too (torch needs cuda-toolkit[...]'s)
        for f in dist.files or []:
            top = f.parts[0]
            if top != '..' and not (site / top).exists():
                (site / top).symlink_to(Path(dist.locate_file(top)))
    return dest / 'bin' / 'python', site, seen


@pytest.mark.network
def test_offline_install_with_the_system_torch(tmp_path):
    """--download-wheelhouse --no-torch, then --wheelhouse --system-torch with every network
    route closed: the new venv imports the stack (the set-up's own final check, run with no
    PYTHONPATH), has its own pins, and reaches the interpreter's torch through its .pth only."""
    wh = tmp_path / 'wheelhouse'
    out = subprocess.run([sys.executable, str(REPO / 'tools/setup_env.py'),
                          '--download-wheelhouse', str(wh), '--no-torch'],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    files = {f.name for f in wh.iterdir()}
    assert wheelhouse.mmcv_sdist() in files and wheelhouse.WHEELHOUSE_MANIFEST in files
    assert any(f.startswith(f'mmsegmentation-{common.pin("mmsegmentation")}-') for f in files)
    assert not any(f.startswith(('torch-', 'torchvision-', 'nvidia')) for f in files)

    host_python, host_site, linked = _torch_only_interpreter(tmp_path / 'host')
    assert 'mmengine' not in linked and 'timm' not in linked
    dead = 'http://127.0.0.1:9'  # nothing listens: any download attempt fails at once
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(PIP_INDEX_URL=dead + '/simple', http_proxy=dead, https_proxy=dead,
               HTTP_PROXY=dead, HTTPS_PROXY=dead)
    venv = tmp_path / 'venv'
    out = subprocess.run([str(host_python), str(REPO / 'tools/setup_env.py'), '--venv', str(venv),
                          '--wheelhouse', str(wh), '--system-torch'],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "pip's index is off" in out.stdout and 'environment ready' in out.stdout
    assert f'checking `{setup_env.FINAL_CHECK}`' in out.stdout
    # where the venv finds each package (located, not imported: the set-up imported them)
    code = ('import importlib.util as u, importlib.metadata as m; '
            'print(u.find_spec("mmengine").origin, m.version("timm"), u.find_spec("torch").origin)')
    got = subprocess.run([str(venv / 'bin' / 'python'), '-c', code], capture_output=True,
                         text=True, env=env)
    assert got.returncode == 0, got.stderr[-2000:]
    mmengine_file, timm_version, torch_file = got.stdout.split()
    assert mmengine_file.startswith(str(venv))
    assert timm_version == common.pin('timm')
    assert torch_file.startswith(str(host_site))
    assert setup_env.read_stamp(venv)['mode'] == dict(system_torch=True, wheelhouse=True)
