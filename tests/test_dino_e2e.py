"""The DINOv2 and DINOv3 configs through the user's tools, on CPU: tools/train.py trains two
iterations of a config as written but for a tiny trunk of the same timm architecture, small
crops and synthetic ADE20K-layout data (all by --cfg-options), then mmseg's own stock
tools/test.py tests the checkpoint."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from test_pipeline_e2e import REPO, STOCK_TEST, last_metrics, run

pytestmark = pytest.mark.slow  # end to end: train and test through the tools

# tiny trunks of the configs' own timm architectures (DINOv2 reg4, DINOv3's Eva)
TINY = dict(depth=4, embed_dim=32, num_heads=2)
# crops and sliding windows of whole patches: 126 = 9 x 14 (DINOv2), 128 = 8 x 16 (DINOv3)
CROP = dict(dinov2=126, dinov3=128)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    from mmseg_prompt.testing import make_synthetic_ade20k
    root = tmp_path_factory.mktemp('dino_e2e')
    return root, make_synthetic_ade20k(root / 'ade', num_train=4, num_val=2, seed=3)


def tiny_options(config, trunk_file, data_root, upernet):
    """--cfg-options for the tiny trunk (its random weights saved to ``trunk_file``), the crops
    and test scale shrunk as in configs/example/, BN instead of SyncBN, the synthetic data, and
    two training iterations."""
    from mmseg_prompt.testing import save_random_trunk
    cfg = Config.fromfile(config)
    crop = CROP[osp.basename(osp.dirname(config))]
    bb = dict(model_name=cfg.model.backbone.model_name, img_size=cfg.model.backbone.img_size,
              model_kwargs=TINY)
    save_random_trunk(bb, trunk_file, seed=0)
    width = TINY['embed_dim']
    opts = [f'model.backbone.pretrained={trunk_file}',
            f'model.data_preprocessor.size=({crop},{crop})',
            f'model.test_cfg.crop_size=({crop},{crop})', 'model.test_cfg.stride=(85,85)',
            'train_dataloader.dataset.pipeline.3.scale=(512,128)',
            f'train_dataloader.dataset.pipeline.4.crop_size=({crop},{crop})',
            'test_dataloader.dataset.pipeline.1.scale=(512,128)',
            'val_dataloader.dataset.pipeline.1.scale=(512,128)',
            'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', 'env_cfg.dist_cfg.backend=gloo']
    opts += [f'model.backbone.model_kwargs.{k}={v}' for k, v in TINY.items()]
    opts += [f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]
    if upernet:
        opts += ['model.backbone.out_indices=(0,1,2,3)', f'model.neck.embed_dim={width}',
                 'model.neck.norm_cfg.type=BN',
                 'model.decode_head.in_channels=[{0},{0},{0},{0}]'.format(width),
                 'model.decode_head.channels=16', 'model.decode_head.norm_cfg.type=BN',
                 f'model.auxiliary_head.in_channels={width}', 'model.auxiliary_head.channels=8',
                 'model.auxiliary_head.norm_cfg.type=BN']
    else:
        opts += ['model.backbone.out_indices=(3,)', f'model.decode_head.in_channels={width}',
                 f'model.decode_head.channels={width}', 'model.decode_head.norm_cfg.type=BN']
    return opts


def train_then_stock_test(config, data, name, upernet):
    root, data_root = data
    opts = tiny_options(config, root / f'{name}_trunk.pth', data_root, upernet)
    work = root / name
    res = run([f'{REPO}/tools/train.py', config, '--work-dir', work, '--cfg-options'] + opts)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'Iter(train) [2/2]' in res.stdout and 'Iter(val) [2/2]' in res.stdout
    keys = torch.load(work / 'iter_2.pth', map_location='cpu', weights_only=True)['state_dict']
    assert not [k for k in keys if k.startswith('backbone.trunk.')]  # the trunk stays out
    stock = run([STOCK_TEST, config, work / 'iter_2.pth', '--work-dir', root / f'{name}_test',
                 '--cfg-options'] + opts)
    assert stock.returncode == 0, stock.stdout[-3000:] + stock.stderr[-3000:]
    assert 0 <= last_metrics(root / f'{name}_test')['mIoU'] <= 100
    return res.stdout, keys


def test_dinov2_linear_probe_trains_and_tests(data):
    config = osp.join(REPO, 'configs/dinov2/linear_vitl_ade20k.py')
    log, keys = train_then_stock_test(config, data, 'dinov2_linear', upernet=False)
    assert 'FrozenViT (vit_large_patch14_reg4_dinov2)' in log
    # only the head trains: its BatchNorm and classifier
    assert {k for k in keys if not k.startswith('decode_head.bn.running')
            and not k.endswith('num_batches_tracked')} == {
        'backbone.provenance', 'decode_head.bn.weight', 'decode_head.bn.bias',
        'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}


def test_dinov3_upernet_with_prompts_trains_and_tests(data):
    config = osp.join(REPO, 'configs/dinov3/vpt_vitl_ade20k.py')
    log, keys = train_then_stock_test(config, data, 'dinov3_vpt', upernet=True)
    assert 'VPTDeepViT (vit_large_patch16_dinov3)' in log
    assert 'backbone.prompts.tokens.0' in keys and 'backbone.prompts.tokens.3' in keys
    assert any(k.startswith('neck.') for k in keys)
