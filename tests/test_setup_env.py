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


def test_torch_requiring_cxx20_is_refused(tmp_path):
    # the guard torch 2.15's headers carry (docs/install.md)
    inc = _fake_include(tmp_path, '#if __cplusplus < 202002L\n#error C++20 or later compatible '
                                  'compiler is required to use ATen.\n#endif\n')
    with pytest.raises(common.SetupError) as e:
        mmcv_build.check_torch_headers(inc, '2.15.0')
    msg = str(e.value)
    assert 'torch 2.15.0 requires C++20' in msg and 'c10/macros/Macros.h' in msg
    assert 'constraints.txt' in msg and 'torch==2.12.1' in msg


def test_torch_with_cxx17_headers_passes(tmp_path):
    inc = _fake_include(tmp_path, '#if __cplusplus < 201703L\n#error C++17 or later compatible '
                                  'compiler is required to use PyTorch.\n#endif\n')
    mmcv_build.check_torch_headers(inc, '2.12.1')


def test_torch_without_headers_is_refused(tmp_path):
    with pytest.raises(common.SetupError, match='has no C\\+\\+ headers'):
        mmcv_build.check_torch_headers(tmp_path / 'missing', '2.13.0+cpu')


def test_installed_torch_headers_fit_mmcv():
    """The pinned torch is one that mmcv 2.1.0 compiles against."""
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
    assert a == 'mmcv-2.1.0_torch-2.12.1_cu130_cp311_x86_64'
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


def test_script_refuses_an_unsupported_python_before_touching_anything(tmp_path):
    """Run the real script under a Python it refuses; it must exit 1 with the message."""
    code = ('import sys, runpy; sys.version_info = (3, 9, 0, "final", 0); '
            f'sys.argv = ["setup_env.py"]; runpy.run_path({str(REPO / "tools/setup_env.py")!r}, '
            'run_name="__main__")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 1
    assert 'Python 3.9 is not supported' in out.stderr


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
        'torchvision': ['torch==2.12.1', 'numpy', 'pillow'],
        'PyYAML': [], 'safetensors': [], 'nvidia-nccl-cu13': [], 'sympy': ['mpmath'],
        'mpmath': [], 'numpy': [], 'pillow': [],
        'mmengine': ['numpy', 'typing_extensions; python_version < "3.13"'],
        'typing-extensions': []}, versions={'timm': '1.0.31'})
    without = wheelhouse.wheelhouse_closure(report, ['timm', 'mmengine'], skip=('torch',
                                                                              'torchvision'))
    assert without == ['mmengine==1.0', 'numpy==1.0', 'pyyaml==1.0', 'safetensors==1.0',
                       'timm==1.0.31', 'typing-extensions==1.0']
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
                torch='torch==2.12.1', packages=[], files=[], constraints_sha256=hashlib.sha256(
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
