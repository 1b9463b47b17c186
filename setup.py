"""mmseg-prompt: visual prompt tuning (CVPT, DA-VPT, VPT-Deep) for mmsegmentation 1.x.

The exact versions this project is tested with are pinned in requirements/constraints.txt;
`make setup` (tools/setup_env.py) installs them, including mmcv built from source with its ops.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name):
    """Requirement lines of requirements/<name>.txt (comments and blank lines dropped)."""
    lines = (HERE / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [ln.split('#')[0].strip() for ln in lines if ln.split('#')[0].strip()]


def get_version():
    text = (HERE / 'mmseg_prompt' / 'version.py').read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


setup(
    name='mmseg_prompt',
    version=get_version(),
    description='Visual prompt tuning (CVPT, DA-VPT, VPT-Deep) of frozen ViTs for mmsegmentation',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmseg_prompt', 'mmseg_prompt.*']),
    python_requires='>=3.10,<3.13',
    install_requires=read_requirements('runtime'),
    extras_require={'tests': read_requirements('tests')},
    license='Apache-2.0',
)
