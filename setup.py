"""mmseg-prompt: visual prompt tuning (CVPT, DA-VPT, VPT-Deep) for mmsegmentation 1.x.

The exact versions this project is tested with are pinned in requirements/constraints.txt;
`make setup` (tools/setup_env.py) installs them, including mmcv built from source with its ops.
A wheel (`pip install .`) carries configs/ and the user tools in mmseg_prompt/.mim/, as
mmsegmentation ships its own, so that configs can inherit `mmseg_prompt::<folder>/<file>.py`.
"""
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
URL = 'https://github.com/mmseg-prompt/mmseg-prompt'
# tools/ of a source checkout only (paths under tools/): its environment set-up and that
# set-up's modules, and the example and the method comparison, which write into it
CHECKOUT_ONLY_TOOLS = ('setup_env.py', 'setup', 'demo.py', 'compare_methods.py',
                       'pretrain_tiny_trunk.py')


def read_requirements(name):
    """Requirement lines of requirements/<name>.txt (comments and blank lines dropped)."""
    lines = (HERE / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [ln.split('#')[0].strip() for ln in lines if ln.split('#')[0].strip()]


def get_version():
    text = (HERE / 'mmseg_prompt' / 'version.py').read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


class BuildPyWithMim(build_py):
    """``build_py`` that also copies configs/ and tools/ into ``mmseg_prompt/.mim/`` of the build
    (mmsegmentation's layout), where mmengine looks up ``mmseg_prompt::`` bases. An editable
    install gets none: it runs the checkout's own configs and tools."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        mim = Path(self.build_lib) / 'mmseg_prompt' / '.mim'
        caches = shutil.ignore_patterns('__pycache__', '*.pyc')
        checkout_only = {HERE / 'tools' / name for name in CHECKOUT_ONLY_TOOLS}

        def ignore(folder, names):
            return set(caches(folder, names)) | {
                n for n in names if Path(folder) / n in checkout_only}

        for name in ('configs', 'tools'):
            shutil.rmtree(mim / name, ignore_errors=True)
            shutil.copytree(HERE / name, mim / name, ignore=ignore)
        # mmengine 0.10.7 resolves `pkg::` only for `<folder>/<file>.py`: the top-level configs
        # get one-line aliases in vitl/, so `mmseg_prompt::vitl/cvpt_vitl_ade20k.py` works
        (mim / 'configs' / 'vitl').mkdir()
        for cfg in sorted((HERE / 'configs').glob('*.py')):
            (mim / 'configs' / 'vitl' / cfg.name).write_text(
                f'# configs/{cfg.name}, reachable as mmseg_prompt::vitl/{cfg.name}\n'
                f"_base_ = ['../{cfg.name}']\n")
        # mmengine reads this index before it falls back to .mim/configs/<path>; no model zoo
        (mim / 'model-index.yml').write_text('Import: []\n')


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
    author='mmseg-prompt contributors',
    url=URL,
    project_urls={
        'Source': URL,
        'Issues': f'{URL}/issues',
        'mmsegmentation': 'https://github.com/open-mmlab/mmsegmentation',
    },
    keywords=['semantic segmentation', 'visual prompt tuning', 'parameter-efficient fine-tuning',
              'vision transformer', 'mmsegmentation', 'CVPT', 'DA-VPT', 'VPT'],
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Intended Audience :: Science/Research',
        'Operating System :: POSIX :: Linux',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
        'Topic :: Scientific/Engineering :: Image Recognition',
    ],
    cmdclass={'build_py': BuildPyWithMim},
    zip_safe=False,
)
