"""The built-in example that `make demo` runs (no downloads, CPU, seconds).

It saves a tiny timm ViT as a local "pretrained" file, builds the segmentor of
``configs/demo/frozen_vit_tiny_upernet.py`` (frozen trunk with CVPT prompts, Feature2Pyramid, UPerHead) through mmseg's
registry with that file, then runs one training-mode loss forward/backward and one prediction on
synthetic images of an odd size, and prints what it saw.

Usage: python tools/demo.py [--config CFG] [--work-dir DIR]
"""
import argparse
import logging
import os
import os.path as osp
import sys
import time

import timm
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)  # so that a plain `python tools/demo.py` finds the package too


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default=osp.join(REPO, 'configs/demo/frozen_vit_tiny_upernet.py'))
    p.add_argument('--work-dir', default=osp.join(REPO, 'demo_out'))
    return p.parse_args()


def save_tiny_trunk(backbone_cfg, path):
    """Save a randomly initialised timm trunk of the config's architecture, as timm saves it."""
    torch.manual_seed(0)
    trunk = timm.create_model(backbone_cfg.model_name, num_classes=0,
                              img_size=backbone_cfg.img_size, **backbone_cfg.model_kwargs)
    torch.save(trunk.state_dict(), path)
    return trunk


def main():
    args = parse_args()
    import mmseg_prompt  # noqa: F401  (the config's custom_imports does the same)
    os.makedirs(args.work_dir, exist_ok=True)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))

    trunk_file = osp.join(args.work_dir, 'tiny_vit_trunk.pth')
    reference = save_tiny_trunk(cfg.model.backbone, trunk_file)
    cfg.model.backbone.pretrained = trunk_file
    print(f'saved a tiny {cfg.model.backbone.model_name} trunk '
          f'({sum(p.numel() for p in reference.parameters()):,} params) to {trunk_file}')

    t0 = time.time()
    model = MODELS.build(cfg.model)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights dumps every tensor's init at INFO
    model.init_weights()
    logger.setLevel(level)
    print(f'built {type(model).__name__} with backbone {type(model.backbone).__name__} '
          f'from {osp.relpath(args.config, REPO)} in {time.time() - t0:.1f}s')
    same = all(torch.equal(a, b) for a, b in zip(model.backbone.trunk.state_dict().values(),
                                                  reference.state_dict().values()))
    print(f'trunk weights equal the saved file: {same}')
    if not same:
        sys.exit('ERROR: the trunk was not loaded from the pretrained file')

    # Two synthetic images of an odd size (not multiples of the patch size) with label maps.
    torch.manual_seed(1)
    h, w = 120, 150
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for _ in range(2)]
    samples = []
    for _ in images:
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w)))
        samples.append(s)

    model.train()
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples), training=True)
    feats = model.backbone(data['inputs'])
    print('backbone outputs for a padded batch of', tuple(data['inputs'].shape), ':',
          ', '.join(str(tuple(f.shape)) for f in feats))
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    tuned = [n for n, p in model.named_parameters() if p.grad is not None]
    trunk_grads = [n for n in tuned if n.startswith('backbone.trunk.')]
    print(f'training forward: loss {total.item():.4f}; {len(tuned)} tensors received gradients, '
          f'{len(trunk_grads)} of them in the frozen trunk')

    model.eval()
    with torch.no_grad():
        preds = model.test_step(dict(inputs=images, data_samples=samples))
    seg = preds[0].pred_sem_seg.data
    print(f'prediction: {tuple(seg.shape)} label map, {seg.unique().numel()} classes present')
    if trunk_grads or seg.shape[-2:] != (h, w):
        sys.exit('ERROR: unexpected demo result')
    print('demo finished')


if __name__ == '__main__':
    main()
