"""End to end on CPU through the user's tools: train a few iterations on generated ADE20K-layout
data, then test single-scale, --tta (both styles) and with mmseg's own stock tools/test.py. (The
DA-VPT+ example trains and resumes through tools/train.py in tests/test_robustness.py.)"""
import glob
import json
import os.path as osp
import subprocess
import sys

import cv2
import mmseg
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # end to end: train and test through the tools
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')
STOCK_TEST = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'test.py')


def run(args, cwd=REPO):
    res = subprocess.run([sys.executable] + [str(a) for a in args], cwd=cwd,
                         capture_output=True, text=True)
    return res


def last_metrics(work_dir):
    with open(sorted(glob.glob(osp.join(work_dir, '*', '*.json')))[-1]) as f:
        return json.loads(f.readlines()[-1])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """4 training iterations of the example config with tools/train.py."""
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    root = tmp_path_factory.mktemp('e2e')
    data_root = make_synthetic_ade20k(root / 'ade', num_train=8, num_val=2, seed=1)
    bb = Config.fromfile(CONFIG).model.backbone
    save_random_trunk(bb, root / 'trunk.pth', seed=0)
    opts = ['--cfg-options', f'model.backbone.pretrained={root / "trunk.pth"}'] + [
        f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]
    train_opts = opts + ['train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                         'default_hooks.checkpoint.interval=4', 'default_hooks.logger.interval=2',
                         'train_dataloader.batch_size=2']
    work = root / 'train'
    res = run([f'{REPO}/tools/train.py', CONFIG, '--work-dir', work] + train_opts)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return dict(root=root, data_root=data_root, opts=opts, work=work, log=res.stdout,
                ckpt=work / 'iter_4.pth')


def test_training_logs_progress_and_saves_tuned_weights_only(trained):
    assert 'Iter(train) [4/4]' in trained['log'] and 'Iter(val) [2/2]' in trained['log']
    assert 'optimizer: ' in trained['log'] and 'frozen tensors left out' in trained['log']
    ckpt = torch.load(trained['ckpt'], map_location='cpu', weights_only=True)
    keys = list(ckpt['state_dict'])
    assert not [k for k in keys if k.startswith('backbone.trunk.')]
    assert 'backbone.prompts.tokens.0' in keys and any(k.startswith('decode_head.') for k in keys)
    assert 'backbone.provenance' in keys  # the trunk's sha256, the tuning parts and their options
    # the optimizer state covers the trainable tensors only
    n_state = len(ckpt['optimizer']['state'])
    n_trainable = sum(1 for k in keys if not k.endswith(('running_mean', 'running_var',
                                                          'num_batches_tracked', 'provenance')))
    assert n_state == n_trainable


def independent_miou(pred_dir, ann_dir, num_classes=150):
    """mIoU from the saved PNG predictions and the ADE20K annotation files, with numpy."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    preds = sorted(glob.glob(osp.join(pred_dir, '*.png')))
    assert preds
    for p in preds:
        pred = cv2.imread(p, cv2.IMREAD_UNCHANGED).astype(np.int64) - 1  # saved with +1
        gt = cv2.imread(osp.join(ann_dir, osp.basename(p)), cv2.IMREAD_UNCHANGED).astype(np.int64)
        gt = gt - 1  # reduce_zero_label: 0 -> ignore, c -> c - 1
        valid = gt >= 0
        pred, gt = pred[valid], gt[valid]
        inter += np.bincount(gt[pred == gt], minlength=num_classes)[:num_classes]
        area_p = np.bincount(pred, minlength=num_classes)[:num_classes]
        area_g = np.bincount(gt, minlength=num_classes)[:num_classes]
        union += area_p + area_g - np.bincount(gt[pred == gt], minlength=num_classes)[:num_classes]
    with np.errstate(invalid='ignore', divide='ignore'):
        return 100 * np.nanmean(inter / union)


def test_single_scale_miou_equals_independent_computation(trained, tmp_path):
    work, out = tmp_path / 'ss', tmp_path / 'preds'
    res = run([f'{REPO}/tools/test.py', CONFIG, trained['ckpt'], '--work-dir', work,
               '--out', out] + trained['opts'])
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'the frozen trunk stays as loaded from' in res.stdout
    reported = last_metrics(work)['mIoU']
    expected = independent_miou(out, osp.join(trained['data_root'], 'annotations/validation'))
    assert abs(reported - expected) < 0.006, (reported, expected)

    # mmseg's own stock tools/test.py runs the same config unchanged, and agrees
    stock = tmp_path / 'stock'
    res = run([STOCK_TEST, CONFIG, trained['ckpt'], '--work-dir', stock] + trained['opts'])
    assert res.returncode == 0, res.stderr[-3000:]
    assert last_metrics(stock)['mIoU'] == reported


def check_tta_run(work, style):
    """The run in ``work`` tested with mmseg's TTA model and ``style``'s scales (read from the
    config it dumped): ratios of the original image (1.x) or of the canonical test scale
    (512, 128) (0.x)."""
    assert 0 <= last_metrics(work)['mIoU'] <= 100
    from mmengine.config import Config
    used = Config.fromfile(glob.glob(osp.join(work, '*.py'))[0])  # the config the run dumped
    assert used.model.type == 'SegTTAModel'
    resizes = used.test_dataloader.dataset.pipeline[1].transforms[0]
    if style == '1.x':
        assert [r.scale_factor for r in resizes] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    else:
        assert [tuple(r.scale) for r in resizes][:2] == [(256, 64), (384, 96)]


def test_multi_scale_flip(trained, tmp_path):
    """--tta in the 1.x style; the 0.x style is the multi-scale test of tools/reproduce.py on
    the same config (tests/test_reproduce.py checks its run the same way)."""
    work = tmp_path / 'tta'
    res = run([f'{REPO}/tools/test.py', CONFIG, trained['ckpt'], '--tta', '--tta-style', '1.x',
               '--work-dir', work] + trained['opts'])
    assert res.returncode == 0, res.stderr[-3000:]
    check_tta_run(work, '1.x')


def test_missing_dataset_folder_is_a_clear_error(trained, tmp_path):
    res = run([f'{REPO}/tools/train.py', CONFIG, '--work-dir', tmp_path,
               '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path / "nowhere"}'])
    assert res.returncode != 0
    assert 'DatasetLayoutError' in res.stderr and str(tmp_path / 'nowhere') in res.stderr
    assert 'ADEChallengeData2016' in res.stderr


def test_missing_pretrained_file_is_a_clear_error(trained, tmp_path):
    missing = tmp_path / 'no_such_trunk.pth'
    res = run([f'{REPO}/tools/test.py', CONFIG, trained['ckpt'], '--work-dir', tmp_path]
              + trained['opts'] + [f'model.backbone.pretrained={missing}'])
    assert res.returncode != 0 and str(missing) in res.stderr


def test_amp_trains_in_bfloat16_on_cpu(trained, tmp_path):
    res = run([f'{REPO}/tools/train.py', CONFIG, '--amp', '--work-dir', tmp_path]
              + trained['opts'] + ['train_cfg.max_iters=2', 'train_cfg.val_interval=100',
                                   'default_hooks.logger.interval=1',
                                   'model.backbone.with_cp=True'])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert '--amp: bfloat16 autocast on cpu' in res.stdout
    assert '--amp: the frozen trunk is stored in bfloat16' in res.stdout
    assert 'Iter(train) [2/2]' in res.stdout
    dumped_path = glob.glob(osp.join(tmp_path, '*.py'))[0]
    dumped = open(dumped_path).read()
    assert "type='BF16OptimWrapper'" in dumped and "trunk_dtype='bfloat16'" in dumped
    # tested with the run's config (bfloat16 trunk) and with the example's (float32): the
    # trunk's fingerprint is the same, so the tuned checkpoint loads into both
    for config in (dumped_path, CONFIG):
        res = run([f'{REPO}/tools/test.py', config, tmp_path / 'iter_2.pth', '--work-dir',
                   tmp_path / 'test'] + trained['opts'])
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert 'mIoU' in res.stdout and 'the frozen trunk stays as loaded from' in res.stdout
    # a config that sets trunk_dtype keeps it
    res = run([f'{REPO}/tools/train.py', CONFIG, '--amp', '--work-dir', tmp_path / 'kept']
              + trained['opts'] + ['train_cfg.max_iters=1', 'train_cfg.val_interval=100',
                                   'model.backbone.trunk_dtype=float32'])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert '--amp: the frozen trunk is stored in bfloat16' not in res.stdout


ADAPTERS_CONFIG = """
_base_ = [{config!r}]
model = dict(backbone=dict(
    _delete_=True, type='FrozenViT', model_name='vit_base_patch16_224',
    model_kwargs=dict(depth=4, embed_dim=64, num_heads=2), pretrained={trunk!r}, img_size=128,
    out_indices=(0, 1, 2, 3),
    parts=[dict(type='LoRA', rank=2, targets=('qkv', 'fc2')),
           dict(type='AdaptFormer', bottleneck=8)]))
"""

PREDICT_MERGED = """
import json, sys
import numpy as np
from mmseg.apis import inference_model, init_model
job = json.load(open(sys.argv[1]))
img = np.random.RandomState(0).randint(0, 255, (96, 160, 3)).astype(np.uint8)
logits = [inference_model(init_model(cfg, ckpt, device='cpu'), img).seg_logits.data
          for cfg, ckpt in job['models']]
print(json.dumps(dict(diff=float((logits[0] - logits[1]).abs().max()),
                      size=float(logits[0].abs().max()))))
"""


def test_lora_and_adaptformer_train_test_export_and_load_through_the_tools(trained, tmp_path):
    """The example config with LoRA and AdaptFormer as its backbone's parts: tools/train.py
    trains them (tuned weights only in the checkpoint), our and mmseg's stock test.py agree,
    export --merge folds LoRA in, the merged files test to the same mIoU and predict the same
    through mmseg's inference API in a fresh interpreter, and the unmerged config refuses the
    merged checkpoint."""
    trunk = str(trained['root'] / 'trunk.pth')
    cfg = tmp_path / 'adapters.py'
    cfg.write_text(ADAPTERS_CONFIG.format(config=CONFIG, trunk=trunk))
    data = [o for o in trained['opts'][1:] if 'data_root' in o]
    opts = ['--cfg-options'] + data
    res = run([f'{REPO}/tools/train.py', cfg, '--work-dir', tmp_path / 'train'] + opts
              + ['train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                 'default_hooks.checkpoint.interval=4', 'train_dataloader.batch_size=2'])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'backbone.lora' in res.stdout and 'backbone.adaptformer' in res.stdout
    ckpt = tmp_path / 'train' / 'iter_4.pth'
    keys = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    assert not [k for k in keys if k.startswith('backbone.trunk.')]
    assert {k.split('.')[1] for k in keys if k.startswith('backbone.')} == {
        'lora', 'adaptformer', 'provenance'}
    ours = run([f'{REPO}/tools/test.py', cfg, ckpt, '--work-dir', tmp_path / 'ours'] + opts)
    stock = run([STOCK_TEST, cfg, ckpt, '--work-dir', tmp_path / 'stock'] + opts)
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert stock.returncode == 0, stock.stderr[-3000:]
    miou = last_metrics(tmp_path / 'ours')['mIoU']
    assert last_metrics(tmp_path / 'stock')['mIoU'] == miou

    res = run([f'{REPO}/tools/export_full_checkpoint.py', cfg, ckpt, tmp_path / 'merged.pth',
               '--merge'])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "merged into the trunk's weights: LoRA" in res.stdout
    merged_cfg = tmp_path / 'merged.py'
    res = run([f'{REPO}/tools/test.py', merged_cfg, tmp_path / 'merged.pth', '--work-dir',
               tmp_path / 'merged'] + opts)
    assert res.returncode == 0, res.stderr[-3000:]
    assert abs(last_metrics(tmp_path / 'merged')['mIoU'] - miou) < 0.01
    (tmp_path / 'job.json').write_text(json.dumps(dict(models=[
        [str(cfg), str(ckpt)], [str(merged_cfg), str(tmp_path / 'merged.pth')]])))
    (tmp_path / 'predict.py').write_text(PREDICT_MERGED)
    res = subprocess.run([sys.executable, str(tmp_path / 'predict.py'),
                          str(tmp_path / 'job.json')], cwd=tmp_path, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out['diff'] < 1e-4 * max(out['size'], 1.0), out

    res = run([f'{REPO}/tools/test.py', cfg, tmp_path / 'merged.pth', '--work-dir',
               tmp_path / 'refused'] + opts)
    assert res.returncode != 0
    assert 'backbone.lora.lora_A.0_qkv' in res.stdout + res.stderr
