"""Write one self-contained checkpoint: the tuned weights plus the frozen trunk.

    python tools/export_full_checkpoint.py CONFIG TUNED_CKPT OUT.pth [--cfg-options ...]

Training checkpoints hold only what trained; the trunk comes from `model.backbone.pretrained`.
The exported file also holds `backbone.trunk.*`, so it loads without the pretrained file. It is
written to a temporary file and renamed, so a failed export never leaves a half-written file.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint', help='a checkpoint saved by training (tuned weights only)')
    p.add_argument('out', help='the full checkpoint to write')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import mmseg_prompt  # noqa: F401
    from mmseg.registry import MODELS

    from mmseg_prompt.utils.atomic_checkpoint import write_atomically
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    ckpt = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    backbone = model.backbone
    backbone.save_frozen_trunk = True
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = dict(ckpt.get('meta', {}), exported_from=osp.abspath(args.checkpoint),
                trunk_from=backbone.trunk_source)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    write_atomically(args.out, lambda f: torch.save(dict(meta=meta, state_dict=state), f))
    n_trunk = sum(1 for k in state if k.startswith('backbone.trunk.'))
    print(f'wrote {args.out}: {len(state)} tensors ({n_trunk} of the frozen trunk), '
          f'{osp.getsize(args.out) / 2**20:.1f} MiB; the tuned checkpoint was '
          f'{osp.getsize(args.checkpoint) / 2**20:.1f} MiB')


if __name__ == '__main__':
    main()
