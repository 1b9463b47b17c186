"""The example config on a DINOv3-style (RoPE) trunk through the user's tools on CPU: train,
test --tta (ours and mmseg's stock test.py), export a full checkpoint, and predict with mmseg's
inference API in a fresh interpreter from both checkpoints."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from test_pipeline_e2e import STOCK_TEST, last_metrics, run

pytestmark = pytest.mark.slow  # end to end: train and test through the tools
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs/example/cvpt_tiny_dinov3_ade20k_synthetic.py')
PREDICT = """
import json, sys
import numpy as np
from mmseg.apis import inference_model, init_model
job = json.load(open(sys.argv[1]))
img = np.random.RandomState(0).randint(0, 255, (96, 160, 3)).astype(np.uint8)
models = [init_model(cfg, ckpt, device='cpu') for cfg, ckpt in job]
logits = [inference_model(m, img).seg_logits.data for m in models]
print(json.dumps(dict(family=type(models[0].backbone.family).__name__,
                      diff=float((logits[0] - logits[1]).abs().max()),
                      size=float(logits[0].abs().max()))))
"""


def test_rope_trunk_trains_tests_exports_and_infers_through_the_tools(tmp_path):
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    data_root = make_synthetic_ade20k(tmp_path / 'ade', num_train=4, num_val=1, seed=1)
    cfg = Config.fromfile(CONFIG)
    assert cfg.model.backbone.model_name == 'vit_small_patch16_dinov3_qkvb'
    trunk = tmp_path / 'trunk.pth'
    save_random_trunk(cfg.model.backbone, trunk, seed=0)
    opts = ['--cfg-options', f'model.backbone.pretrained={trunk}'] + [
        f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]
    res = run([f'{REPO}/tools/train.py', CONFIG, '--work-dir', tmp_path / 'train'] + opts
              + ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                 'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=2'])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'CVPTViT (vit_small_patch16_dinov3_qkvb): trainable params' in res.stdout
    ckpt = tmp_path / 'train' / 'iter_2.pth'
    keys = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    assert not [k for k in keys if k.startswith('backbone.trunk.')]

    for name, tool in (('ours', f'{REPO}/tools/test.py'), ('stock', STOCK_TEST)):
        res = run([tool, CONFIG, ckpt, '--work-dir', tmp_path / name, '--tta'] + opts)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert last_metrics(tmp_path / 'stock')['mIoU'] == last_metrics(tmp_path / 'ours')['mIoU']

    full = tmp_path / 'full.pth'
    res = run([f'{REPO}/tools/export_full_checkpoint.py', CONFIG, ckpt, full] + opts)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    child = tmp_path / 'config.py'  # the config with the trunk file, as a user would edit it
    child.write_text(f"_base_ = ['{CONFIG}']\nmodel = dict(backbone=dict(pretrained='{trunk}'))\n")
    (tmp_path / 'job.json').write_text(json.dumps([[str(child), str(ckpt)],
                                                   [str(child), str(full)]]))
    (tmp_path / 'predict.py').write_text(PREDICT)
    res = subprocess.run([sys.executable, str(tmp_path / 'predict.py'),
                          str(tmp_path / 'job.json')], cwd=tmp_path, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out['family'] == 'EvaFamily' and out['diff'] == 0.0 and out['size'] > 0, out
