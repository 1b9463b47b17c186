"""What the set-up's steps share: the checkout's paths, the pins, the venv settings, commands.

Every version comes from ``requirements/constraints.txt`` (``pin``); nothing else writes one.
Standard library only: this runs under the system interpreter before anything is installed.
"""
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / '.venv'
CONSTRAINTS = REPO / 'requirements' / 'constraints.txt'
RUNTIME_REQUIREMENTS = REPO / 'requirements' / 'runtime.txt'
TEST_REQUIREMENTS = REPO / 'requirements' / 'tests.txt'
BUILD_TOOLS = ['pip', 'setuptools', 'wheel', 'ninja']  # ninja: a parallel mmcv build
TORCH_PACKAGES = ('torch', 'torchvision')


class SetupError(RuntimeError):
    """A set-up failure with a message that says what is wrong and what to do."""


def log(msg):
    print(f'[setup] {msg}', flush=True)


# ----------------------------------------------------------------------------- requirements
def read_requirements(path: Path) -> List[str]:
    """Requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = (ln.split('#')[0].strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln]


def requirement_name(req: str) -> str:
    """The normalised project name of a requirement string (PEP 503): 'Foo_bar>=1' -> 'foo-bar'."""
    name = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', req).group(1)
    return re.sub(r'[-_.]+', '-', name).lower()


def pinned_versions(constraints: Optional[Path] = None) -> Dict[str, str]:
    """``{normalised name: version}`` of every ``name==version`` line of the constraints file."""
    path = constraints or CONSTRAINTS
    pins = {}
    for req in read_requirements(path):
        m = re.match(r'([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;,]+)\s*(;|$)', req)
        if m:
            pins[requirement_name(m.group(1))] = m.group(2)
    return pins


def pin(name: str, constraints: Optional[Path] = None) -> str:
    """The version ``requirements/constraints.txt`` pins for ``name``: pin('torch') -> '2.12.1'."""
    path = constraints or CONSTRAINTS
    try:
        return pinned_versions(path)[requirement_name(name)]
    except KeyError:
        raise SetupError(f'{path} pins no {name}: add a line `{name}==<version>` with the '
                         f'version the project is tested with') from None


def constraints_without(names, dest: Path) -> Path:
    """A copy of the constraints without the pins of ``names`` (the torch a machine brings)."""
    kept = [ln for ln in CONSTRAINTS.read_text().splitlines()
            if not (ln.split('#')[0].strip() and requirement_name(ln) in names)]
    dest.write_text('\n'.join(kept) + '\n')
    return dest


# ----------------------------------------------------------------------------- the venv
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


# ----------------------------------------------------------------------------- commands
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
