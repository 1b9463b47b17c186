"""Inference on every shipped config through mmseg's APIs (`init_model` + `inference_model`,
`MMSegInferencer`) in a fresh interpreter and through tools/infer.py, with tuned-only checkpoints:
the predictions equal what tools/test.py --out writes for the same image.

Each config is shrunk the way configs/example/ shrinks its parent (a child config: a tiny timm
trunk, narrow heads, a 128 sliding window); the trunk file, data and checkpoints are generated.
"""
import glob
import json
import os.path as osp
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # mmseg's APIs and the tools in subprocesses, every config
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# the UperNet configs (the prompt comparison's linear-head arms have their own end-to-end test,
# tests/test_compare_methods.py, which runs mmseg's APIs on them; the SETR-PUP ones of the
# papers' protocol train an iteration in tests/test_paper_protocol.py; the DINOv2 and DINOv3 ones
# are these configs with another trunk, which the tiny child below replaces anyway: they train
# and test in tests/test_dino_e2e.py; the example on a RoPE trunk goes through the APIs in
# tests/test_rope_example.py)
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p and 'comparison' not in p and 'paper_protocol' not in p
                 and osp.basename(osp.dirname(p)) not in ('dinov2', 'dinov3')
                 and 'dinov3' not in osp.basename(p))


def rel(path):
    return osp.relpath(path, osp.join(REPO, 'configs'))


# tools/test.py on these by default (one per dataset and segmentor type); on all with -m slow
FAST = ('cvpt_vitl_ade20k.py', 'davpt_plus_vitl_pascal_context.py',
        'example/cvpt_tiny_ade20k_synthetic.py')
CHILD = """_base_ = ['{base}']
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(model_name='vit_base_patch16_224', img_size=128, out_indices=(0, 1, 2, 3),
                  model_kwargs=dict(depth=4, embed_dim=64, num_heads=2), pretrained='{trunk}'),
    neck=dict(embed_dim=64),
    decode_head=dict(in_channels=[64] * 4, channels=32),
    auxiliary_head=dict(in_channels=64, channels=16),
    test_cfg=dict(crop_size=(128, 128), stride=(85, 85)))
test_pipeline = {pipeline}
train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root='{root}'))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root='{root}', pipeline=test_pipeline))
test_dataloader = val_dataloader
"""
# mmseg's APIs as a user calls them, in a fresh interpreter: one JSON job per config
API_SCRIPT = """
import json, sys
import numpy as np
from mmseg.apis import MMSegInferencer, inference_model, init_model
jobs = json.load(open(sys.argv[1]))
for job in jobs:
    model = init_model(job['config'], job['checkpoint'], device='cpu')
    api = [inference_model(model, img).pred_sem_seg.data[0].numpy() for img in job['images']]
    inferencer = MMSegInferencer(model=job['config'], weights=job['checkpoint'], device='cpu')
    out = inferencer(job['images'], return_datasamples=True)
    out = out if isinstance(out, list) else [out]
    inf = [o.pred_sem_seg.data[0].cpu().numpy() for o in out]
    np.savez(job['out'], **{f'api{i}': a for i, a in enumerate(api)},
             **{f'inferencer{i}': a for i, a in enumerate(inf)})
    print('done', job['config'], flush=True)
"""


def run(args):
    return subprocess.run([sys.executable] + [str(a) for a in args], cwd=REPO,
                          capture_output=True, text=True)


@pytest.fixture(scope='module')
def shrunk(tmp_path_factory):
    """Per shipped config: a tiny child config, its tuned-only checkpoint (with the dataset's
    classes and palette in its meta, as a Runner saves them) and the validation images."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    from mmseg_prompt.testing import (make_synthetic_ade20k, make_synthetic_pascal_context,
                                      save_random_trunk)
    root = tmp_path_factory.mktemp('infer')
    roots = {'ade': make_synthetic_ade20k(root / 'ade', num_train=1, num_val=2, seed=5),
             'context': make_synthetic_pascal_context(root / 'ctx', num_train=1, num_val=1,
                                                      seed=5)}
    trunk = root / 'trunk.pth'
    save_random_trunk(dict(model_name='vit_base_patch16_224', img_size=128,
                           model_kwargs=dict(depth=4, embed_dim=64, num_heads=2)), trunk)
    init_default_scope('mmseg')
    out = {}
    for i, path in enumerate(CONFIGS):
        name = osp.splitext(osp.basename(path))[0]
        data_root = roots['context' if 'pascal_context' in name else 'ade']
        # the shipped test pipeline, its Resize scale shrunk with the window (4x fewer pixels)
        pipeline = [t.to_dict() for t in Config.fromfile(path).test_pipeline]
        resize = [t for t in pipeline if t['type'] == 'Resize']
        assert len(resize) == 1 and any(t['type'] == 'CheckSegLabels' for t in pipeline)
        resize[0]['scale'] = tuple(s // 4 for s in resize[0]['scale'])
        child = root / f'{name}_tiny.py'
        child.write_text(CHILD.format(base=path, trunk=trunk, root=data_root, pipeline=pipeline))
        cfg = Config.fromfile(str(child))
        torch.manual_seed(i)
        model = MODELS.build(cfg.model)
        model.init_weights()
        meta = DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO
        ckpt = root / f'{name}.pth'
        torch.save(dict(meta=dict(dataset_meta=dict(classes=meta['classes'],
                                                     palette=meta['palette'])),
                        state_dict=model.state_dict()), ckpt)
        sub = 'images/validation' if 'ade' in name else 'JPEGImages'
        val_list = osp.join(data_root, 'ImageSets/SegmentationContext/val.txt')
        images = (sorted(glob.glob(osp.join(data_root, sub, '*.jpg'))) if 'ade' in name else
                  [osp.join(data_root, sub, s.strip() + '.jpg') for s in open(val_list)])
        out[path] = dict(config=str(child), checkpoint=str(ckpt), images=images,
                         out=str(root / f'{name}_pred.npz'))
    jobs = root / 'jobs.json'
    jobs.write_text(json.dumps(list(out.values())))
    script = root / 'api.py'
    script.write_text(API_SCRIPT)
    res = run([script, jobs])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return out


def test_apis_run_on_every_shipped_config(shrunk):
    """init_model + inference_model and MMSegInferencer ran on each (the fixture), agreeing."""
    assert set(shrunk) == set(CONFIGS) and len(CONFIGS) >= 11
    assert set(FAST) <= set(map(rel, CONFIGS))
    for job in shrunk.values():
        preds = np.load(job['out'])
        for i, img in enumerate(job['images']):
            assert preds[f'api{i}'].shape == cv2.imread(img).shape[:2]
            np.testing.assert_array_equal(preds[f'api{i}'], preds[f'inferencer{i}'])


@pytest.mark.parametrize('path', [p if rel(p) in FAST else pytest.param(p, marks=pytest.mark.slow)
                                  for p in CONFIGS], ids=rel)
def test_apis_predict_what_tools_test_writes(shrunk, tmp_path, path):
    job = shrunk[path]
    ckpt = torch.load(job['checkpoint'], map_location='cpu', weights_only=True)
    assert not [k for k in ckpt['state_dict'] if k.startswith('backbone.trunk.')]  # tuned only
    out = tmp_path / 'out'
    res = run([f'{REPO}/tools/test.py', job['config'], job['checkpoint'], '--work-dir', tmp_path,
               '--out', out])
    assert res.returncode == 0, res.stderr[-3000:]
    preds = np.load(job['out'])
    for i, img in enumerate(job['images']):
        written = cv2.imread(str(out / (osp.splitext(osp.basename(img))[0] + '.png')),
                             cv2.IMREAD_UNCHANGED).astype(np.int64) - 1  # saved +1 (reduce_zero)
        assert written.shape == cv2.imread(img).shape[:2]
        assert len(np.unique(written)) > 1  # a prediction worth comparing
        np.testing.assert_array_equal(preds[f'api{i}'], written)
        np.testing.assert_array_equal(preds[f'inferencer{i}'], written)


def test_infer_tool_writes_masks_overlays_and_labels(shrunk, tmp_path):
    job = shrunk[osp.join(REPO, 'configs', 'cvpt_vitl_ade20k.py')]
    folder = osp.dirname(job['images'][0])
    out = tmp_path / 'out'
    res = run([f'{REPO}/tools/infer.py', folder, job['config'], job['checkpoint'],
               '--out-dir', out, '--opacity', '0.3', '--device', 'cpu'])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f'segmenting {len(job["images"])} images on cpu' in res.stdout
    assert f'{len(job["images"])}/{len(job["images"])}' in res.stdout  # the progress bar
    from mmseg.datasets import ADE20KDataset
    palette = np.array(ADE20KDataset.METAINFO['palette'], dtype=np.uint8)
    preds = np.load(job['out'])
    for i, img_path in enumerate(job['images']):
        stem = osp.splitext(osp.basename(img_path))[0]
        labels = cv2.imread(str(out / 'labels' / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(labels, preds[f'api{i}'])  # = tools/test.py's
        mask = cv2.imread(str(out / 'masks' / f'{stem}.png'))
        np.testing.assert_array_equal(mask, palette[labels][..., ::-1])  # BGR on disk
        img = cv2.imread(img_path).astype(np.float64)
        overlay = cv2.imread(str(out / 'overlays' / f'{stem}.png')).astype(np.float64)
        assert np.abs(overlay - np.floor(img * 0.7 + mask * 0.3)).max() <= 1

    empty = tmp_path / 'empty'
    empty.mkdir()
    res = run([f'{REPO}/tools/infer.py', empty, job['config'], job['checkpoint'],
               '--out-dir', out])
    assert res.returncode != 0 and f'no images found in folder {empty}' in res.stderr
    missing = tmp_path / 'missing.pth'
    res = run([f'{REPO}/tools/infer.py', job['images'][0], job['config'], missing,
               '--out-dir', out])
    assert res.returncode != 0 and f'checkpoint file {missing} does not exist' in res.stderr


def test_infer_tool_segments_every_readable_image_and_lists_the_unreadable(shrunk, tmp_path):
    """A folder with a corrupt image: every readable one is segmented (as the API predicts),
    the unreadable one is listed at the end, and the exit status is non-zero."""
    job = shrunk[osp.join(REPO, 'configs', 'cvpt_vitl_ade20k.py')]
    folder = tmp_path / 'images'
    folder.mkdir()
    for path in job['images']:
        shutil.copy(path, folder)
    broken = folder / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 not really a jpeg')
    out = tmp_path / 'out'
    res = run([f'{REPO}/tools/infer.py', folder, job['config'], job['checkpoint'],
               '--out-dir', out, '--device', 'cpu'])
    assert res.returncode != 0
    assert f'1 of {len(job["images"]) + 1} images could not be read' in res.stderr
    assert str(broken) in res.stderr
    preds = np.load(job['out'])
    for i, img_path in enumerate(job['images']):
        stem = osp.splitext(osp.basename(img_path))[0]
        labels = cv2.imread(str(out / 'labels' / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(labels, preds[f'api{i}'])
    assert not (out / 'labels' / 'broken.png').exists()
