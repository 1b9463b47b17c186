"""The set-up script's checks, on inputs made here (they must stop with a clear message)."""
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('setup_env', REPO / 'tools' / 'setup_env.py')
setup_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_env)


@pytest.mark.parametrize('version', [(3, 9, 18), (3, 13, 0), (2, 7, 18)])
def test_unsupported_python_is_refused_with_the_fix(version):
    with pytest.raises(setup_env.SetupError) as e:
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
    # the guard torch 2.15's headers carry (install.md)
    inc = _fake_include(tmp_path, '#if __cplusplus < 202002L\n#error C++20 or later compatible '
                                  'compiler is required to use ATen.\n#endif\n')
    with pytest.raises(setup_env.SetupError) as e:
        setup_env.check_torch_headers(inc, '2.15.0')
    msg = str(e.value)
    assert 'torch 2.15.0 requires C++20' in msg and 'c10/macros/Macros.h' in msg
    assert 'constraints.txt' in msg and 'torch==2.12.1' in msg


def test_torch_with_cxx17_headers_passes(tmp_path):
    inc = _fake_include(tmp_path, '#if __cplusplus < 201703L\n#error C++17 or later compatible '
                                  'compiler is required to use PyTorch.\n#endif\n')
    setup_env.check_torch_headers(inc, '2.12.1')


def test_torch_without_headers_is_refused(tmp_path):
    with pytest.raises(setup_env.SetupError, match='has no C\\+\\+ headers'):
        setup_env.check_torch_headers(tmp_path / 'missing', '2.13.0+cpu')


def test_installed_torch_headers_fit_mmcv():
    """The pinned torch is one that mmcv 2.1.0 compiles against."""
    import torch
    import torch.utils.cpp_extension as ext
    setup_env.check_torch_headers(ext.include_paths()[0], torch.__version__)


def _wheel(path, names):
    with zipfile.ZipFile(path, 'w') as zf:
        for n in names:
            zf.writestr(n, b'')
    return path


def test_wheel_without_compiled_ops_is_detected(tmp_path):
    lite = _wheel(tmp_path / 'lite.whl', ['mmcv/__init__.py', 'mmcv/ops/__init__.py'])
    full = _wheel(tmp_path / 'full.whl',
                  ['mmcv/__init__.py', 'mmcv/_ext.cpython-311-x86_64-linux-gnu.so'])
    assert not setup_env.wheel_has_ops(lite)
    assert setup_env.wheel_has_ops(full)


def test_cache_key_separates_torch_and_python_builds():
    a = setup_env.mmcv_cache_key('2.12.1+cu130', 'cp311', 'x86_64')
    assert a == 'mmcv-2.1.0_torch-2.12.1_cu130_cp311_x86_64'
    assert a != setup_env.mmcv_cache_key('2.13.0+cpu', 'cp311', 'x86_64')
    assert a != setup_env.mmcv_cache_key('2.12.1+cu130', 'cp312', 'x86_64')


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv('MMSEG_PROMPT_CACHE', str(tmp_path / 'c'))
    assert setup_env.cache_root() == tmp_path / 'c'
    monkeypatch.delenv('MMSEG_PROMPT_CACHE')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'x'))
    assert setup_env.cache_root() == tmp_path / 'x' / 'mmseg_prompt'


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
