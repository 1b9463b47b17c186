"""`pip install .` as a user does it: a wheel (not editable) with the configs and tools inside the
package, used from another folder. The wheel is installed to a temporary target that comes first
on PYTHONPATH, and the checkout's editable finder is taken out of the child interpreters, so
nothing can come from the checkout."""
import json
import os
import os.path as osp
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile

import pytest

pytestmark = pytest.mark.slow  # builds and installs a wheel, runs its tools
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# the tools setup.py keeps out of the wheel (they write into a checkout), as paths under tools/:
# tools/setup/ holds setup_env.py's modules
CHECKOUT_ONLY = ('setup_env.py', 'setup', 'demo.py', 'compare_methods.py',
                 'pretrain_tiny_trunk.py')
SOURCES = ('setup.py', 'MANIFEST.in', 'README.md', 'requirements', 'mmseg_prompt', 'configs',
           'tools')
# the child interpreter forgets the editable install of the checkout (setuptools' finder)
NO_EDITABLE = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
               "if 'Editable' not in getattr(f, '__name__', type(f).__name__)]")


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources (not the shared checkout) and its target."""
    root = tmp_path_factory.mktemp('pkg')
    src = root / 'src'
    src.mkdir()
    for name in SOURCES:
        path = osp.join(REPO, name)
        if osp.isdir(path):
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns('__pycache__', '*.egg-info'))
        else:
            shutil.copy2(path, src / name)
    pip = [sys.executable, '-m', 'pip']
    res = subprocess.run([*pip, 'wheel', '--no-deps', '--no-build-isolation', str(src), '-w',
                          str(root / 'wheel')], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    wheel = next((root / 'wheel').glob('mmseg_prompt-*.whl'))
    res = subprocess.run([*pip, 'install', '--no-deps', '--target', str(root / 'site'),
                          str(wheel)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return dict(root=root, wheel=wheel, site=root / 'site',
                mim=root / 'site' / 'mmseg_prompt' / '.mim')


def in_site(installed, args, cwd):
    env = dict(os.environ, PYTHONPATH=str(installed['site']))
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=env)


def test_the_wheel_carries_configs_tools_and_metadata(installed):
    with zipfile.ZipFile(installed['wheel']) as whl:
        names = set(whl.namelist())
        meta = whl.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
        sh = whl.getinfo('mmseg_prompt/.mim/tools/dist_train.sh')
    checkout_only = tuple(f'tools/{name}' for name in CHECKOUT_ONLY)
    for rel in ('configs', 'tools'):  # every config and tool of the checkout, in .mim
        for top, _, files in os.walk(osp.join(REPO, rel)):
            for f in files:
                path = osp.relpath(osp.join(top, f), REPO)
                shipped = f'mmseg_prompt/.mim/{path}' in names
                if path in checkout_only or path.startswith(tuple(f'{c}/' for c in checkout_only)):
                    assert not shipped, path
                elif f.endswith(('.py', '.sh')) and '__pycache__' not in path:
                    assert shipped, path
    assert 'mmseg_prompt/.mim/model-index.yml' in names
    assert not any('__pycache__' in n for n in names)
    # only mmseg_prompt is a top-level package of the wheel (tools/setup/ is not one)
    tops = {n.split('/')[0] for n in names if not n.split('/')[0].endswith('.dist-info')}
    assert tops == {'mmseg_prompt'}, tops
    assert (sh.external_attr >> 16) & stat.S_IXUSR  # the shell tools stay executable
    assert 'Author: mmseg-prompt contributors' in meta
    assert 'Home-page: https://' in meta and 'Project-URL: Source, https://' in meta
    assert 'Classifier: Programming Language :: Python :: 3.11' in meta
    assert 'Keywords: ' in meta and 'visual prompt tuning' in meta
    assert 'License: Apache-2.0' in meta or 'License-Expression: Apache-2.0' in meta


BUILD = NO_EDITABLE + textwrap.dedent("""
    import json, sys
    import torch
    import mmseg_prompt  # names the package for mmengine's `mmseg_prompt::` (our tools do it)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(sys.argv[1])
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, 128, 128), mode='tensor')
    registry = sys.modules['mmseg_prompt.registry'].__file__  # the scope's, which built it
    print(json.dumps(dict(package=mmseg_prompt.__file__, registry=registry,
                          text=cfg.text, scope=cfg.model.get('_scope_'),
                          backbone=type(model.backbone).__name__, shape=list(logits.shape))))
""")


@pytest.fixture
def user_config(tmp_path):
    """A config in the user's own folder inheriting the installed example config, its trunk file
    and data generated beside it."""
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    data_root = make_synthetic_ade20k(tmp_path / 'ade', num_train=2, num_val=1, seed=0)
    example = Config.fromfile(osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py'))
    save_random_trunk(example.model.backbone, tmp_path / 'trunk.pth', seed=0)
    cfg = tmp_path / 'my_cvpt.py'
    cfg.write_text(textwrap.dedent(f"""
        _base_ = ['mmseg_prompt::example/cvpt_tiny_ade20k_synthetic.py']
        model = dict(backbone=dict(pretrained={str(tmp_path / 'trunk.pth')!r}),
                     decode_head=dict(num_classes=150))
        data_root = {data_root!r}
        train_dataloader = dict(batch_size=2, num_workers=0, dataset=dict(data_root=data_root))
        val_dataloader = dict(num_workers=0, dataset=dict(data_root=data_root))
        test_dataloader = val_dataloader
        train_cfg = dict(max_iters=1, val_interval=1)
        default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
    """))
    return cfg


def test_a_config_in_another_folder_inherits_and_builds_the_installed_one(installed,
                                                                         user_config):
    res = in_site(installed, ['-c', BUILD, user_config], cwd=user_config.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    site = str(installed['site'])
    assert got['package'].startswith(site) and got['registry'].startswith(site)
    base = str(installed['mim'] / 'configs/example/cvpt_tiny_ade20k_synthetic.py')
    assert base in got['text'] and osp.join(REPO, 'configs') not in got['text']
    assert str(installed['mim'] / 'configs/_base_/models/upernet_vitl_prompt.py') in got['text']
    assert got['scope'] == 'mmseg_prompt'  # built through mmseg_prompt.registry
    assert got['backbone'] == 'CVPTViT' and got['shape'] == [1, 150, 32, 32]


def test_the_top_level_configs_inherit_through_their_vitl_alias(installed, tmp_path):
    """mmengine resolves `pkg::` only with a folder; `mmseg_prompt::vitl/<config>` reaches each
    top-level ViT-L config of the wheel, and a bare `mmseg_prompt::<config>` is mmengine's
    error, not a silent other file."""
    code = NO_EDITABLE + textwrap.dedent("""
        import json, sys
        import mmseg_prompt
        from mmengine.config import Config
        cfg = Config.fromfile(sys.argv[1])
        print(json.dumps(dict(text=cfg.text, backbone=cfg.model.backbone.type,
                              prompts=cfg.model.backbone.get('num_prompts'),
                              classes=cfg.model.decode_head.num_classes)))
    """)
    for name, backbone, classes in (('cvpt_vitl_ade20k.py', 'CVPTViT', 150),
                                    ('vpt_vitl_pascal_context.py', 'VPTDeepViT', 59)):
        cfg = tmp_path / f'my_{name}'
        cfg.write_text(f"_base_ = ['mmseg_prompt::vitl/{name}']\n")
        res = in_site(installed, ['-c', code, cfg], cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        got = json.loads(res.stdout.strip().splitlines()[-1])
        assert str(installed['mim'] / 'configs' / name) in got['text']
        assert got['backbone'] == backbone and got['classes'] == classes
    bare = tmp_path / 'bare.py'
    bare.write_text("_base_ = ['mmseg_prompt::cvpt_vitl_ade20k.py']\n")
    res = in_site(installed, ['-c', code, bare], cwd=tmp_path)
    assert res.returncode != 0 and 'relative config path' in res.stderr


def test_the_installed_train_tool_runs_that_config(installed, user_config):
    """The installed tools/train.py, from the user's folder: one iteration, a checkpoint, a
    validation, with every module built from the `mmseg_prompt` scope."""
    work = user_config.parent / 'work'
    train = installed['mim'] / 'tools' / 'train.py'
    run_tool = NO_EDITABLE + ('; import runpy; sys.argv = sys.argv[1:]; '
                              'runpy.run_path(sys.argv[0], run_name="__main__")')
    res = in_site(installed, ['-c', run_tool, train, user_config, '--work-dir', work],
                  cwd=user_config.parent)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'Iter(train) [1/1]' in res.stdout and 'mIoU' in res.stdout
    assert 'Failed to search registry' not in res.stdout + res.stderr
    assert (work / 'iter_1.pth').exists()
