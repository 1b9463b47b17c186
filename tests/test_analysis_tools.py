"""tools/analysis/get_flops.py and browse_dataset.py, run as a user runs them, against counts
made independently (by hand, by timm) and against mmseg 1.2.2's stock tools they replace."""
import json
import os.path as osp
import subprocess
import sys

import cv2
import pytest

from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME, write_linear_head_config

pytestmark = pytest.mark.slow  # every test runs a tool in a subprocess
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run(args, cwd):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True)


def tiny_vit_macs(tokens: int, width: int, depth: int, heads: int, patches: int) -> int:
    """Multiply-adds of a timm ViT forward by hand: patch embedding, then per block two
    LayerNorms (5 per element, mmengine's rate), qkv, attention (Q K^T and A V), the output
    projection and the MLP (ratio 4)."""
    n, d = tokens, width
    block = 2 * 5 * n * d + n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * 4 * d
    assert d % heads == 0
    return patches * (3 * 16 * 16) * d + depth * block


def test_get_flops_counts_a_config_without_its_trunk_file_as_by_hand(tmp_path):
    """A frozen tiny ViT (3 blocks, width 64, 64x64 input: 16 patches + the class token) and a
    1x1 classifier, with a trunk file that does not exist."""
    import timm
    cfg = write_linear_head_config(tmp_path / 'tiny_vit_fcn.py', dict(
        type='FrozenViT', model_name=TINY_NAME, img_size=64, model_kwargs=TINY_KWARGS,
        out_indices=(2,), pretrained='checkpoints/no_such_trunk.pth'))
    out = tmp_path / 'flops.json'
    res = run([f'{REPO}/tools/analysis/get_flops.py', cfg, '--json', out], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    trunk = timm.create_model(TINY_NAME, num_classes=0, img_size=64, **TINY_KWARGS)
    trunk_params = sum(p.numel() for p in trunk.parameters())
    head_params = 64 * 5 + 5  # the 1x1 classifier and its bias
    vit = tiny_vit_macs(tokens=17, width=64, depth=3, heads=2, patches=16)
    head = 4 * 4 * 64 * 5  # a 1x1 convolution over the 4x4 feature map
    assert got['parts']['backbone']['flops'] == vit
    assert got['parts']['decode_head']['flops'] == head
    assert got['flops'] == vit + head
    assert got['trunk_params'] == trunk_params == got['parts']['backbone']['params']
    assert got['params'] == trunk_params + head_params
    assert got['trainable'] == head_params and got['trunk_trainable'] == 0
    assert '| backbone: of which the frozen trunk | 200,448 (0.20M) | 0 | - |' in res.stdout
    assert f'| **total** | {trunk_params + head_params:,}' in res.stdout
    # without a crop size in the config it asks for --shape, and --shape makes it run
    no_size = ['--cfg-options', 'model.data_preprocessor.size=None']
    res = run([f'{REPO}/tools/analysis/get_flops.py', cfg, *no_size], cwd=tmp_path)
    assert res.returncode != 0 and 'pass --shape H W' in res.stderr
    res = run([f'{REPO}/tools/analysis/get_flops.py', cfg, *no_size, '--shape', '64'],
              cwd=tmp_path)
    assert res.returncode == 0 and f'| **total** | {trunk_params + head_params:,}' in res.stdout


def test_get_flops_of_the_vitl_config_without_the_trunk_file(tmp_path):
    """The issue's case: configs/cvpt_vitl_ade20k.py, whose 1.2 GB trunk file is not here."""
    import timm
    config = osp.join(REPO, 'configs/cvpt_vitl_ade20k.py')
    out = tmp_path / 'flops.json'
    res = run([f'{REPO}/tools/analysis/get_flops.py', config, '--shape', '224', '--json', out],
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    trunk = timm.create_model('vit_large_patch16_384', num_classes=0, img_size=512)
    assert got['trunk_params'] == sum(p.numel() for p in trunk.parameters())
    assert got['parts']['backbone']['trainable'] == 24 * 10 * 1024  # CVPT: 10 prompts a block
    assert got['trainable'] == got['params'] - got['trunk_params']
    assert got['shape'] == [224, 224] and got['flops'] > 0


@pytest.fixture(scope='module')
def synthetic_data(tmp_path_factory):
    from mmseg_prompt.testing import make_synthetic_ade20k
    return make_synthetic_ade20k(tmp_path_factory.mktemp('browse') / 'ade', num_train=3,
                                 num_val=1, seed=0)


def test_browse_dataset_draws_what_mmseg_stock_tool_cannot(synthetic_data, tmp_path):
    import mmseg
    stock = osp.join(osp.dirname(mmseg.__file__), '.mim/tools/analysis_tools/browse_dataset.py')
    config = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')
    common = ['--not-show', '--show-interval', '0', '--cfg-options',
              f'train_dataloader.dataset.data_root={synthetic_data}']
    res = run([stock, config, '--output-dir', tmp_path / 'stock', *common], cwd=tmp_path)
    assert res.returncode != 0
    assert 'Layout of the output array img is incompatible' in res.stderr  # issue 3405
    res = run([f'{REPO}/tools/analysis/browse_dataset.py', config, '--output-dir',
               tmp_path / 'ours', *common], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    names = [f'ADE_train_{i:08d}.jpg' for i in (1, 2, 3)]
    for name in names:
        drawn = cv2.imread(str(tmp_path / 'ours' / name))
        assert drawn is not None and drawn.ndim == 3 and drawn.std() > 0
