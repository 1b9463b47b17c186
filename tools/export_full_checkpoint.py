"""Write one self-contained checkpoint: the tuned weights plus the frozen trunk.

    python tools/export_full_checkpoint.py CONFIG TUNED_CKPT OUT.pth [--merge] [--cfg-options ...]

Training checkpoints hold only what trained; the trunk comes from `model.backbone.pretrained`.
The exported file also holds `backbone.trunk.*`, so it loads without the pretrained file. With
`--merge`, the parts that fold into the trunk's own weights (LoRA, the K/V bias deltas:
`TuningPart.merge_into`) are folded in and dropped; the config the merged checkpoint loads with
(CONFIG without those parts) is written beside it as OUT.py. Files are written to a temporary
file and renamed, so a failed export never leaves a half-written file.
"""
import argparse
import copy
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
    p.add_argument('--merge', action='store_true',
                   help='fold the mergeable parts (LoRA, K/V bias deltas) into the trunk\'s '
                        'weights and write the config without them as OUT.py')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def merged_config(cfg: Config, merged: list) -> Config:
    """``cfg`` without the merged parts: their entries of ``model.backbone.parts`` dropped and
    ``bias_tuning`` off if the K/V deltas were merged."""
    from mmseg.registry import MODELS

    from mmseg_prompt.models.backbones import KVBiasDeltas
    out = copy.deepcopy(cfg)
    backbone = out.model.backbone
    kinds = {type(p) for p in merged}
    backbone.parts = [p for p in backbone.get('parts', []) if MODELS.get(p['type']) not in kinds]
    if KVBiasDeltas in kinds:
        backbone.bias_tuning = False
    return out


def merge_parts(model, cfg: Config):
    """Fold every mergeable part of ``model.backbone`` into its trunk; return the model of the
    config without those parts holding the merged trunk and the other tuned tensors, and that
    config."""
    from mmseg.registry import MODELS
    backbone = model.backbone
    merged = [part for part in backbone.parts if part.MERGES_INTO_TRUNK]
    readers = [part for part in backbone.parts if part.READS_TRUNK_WEIGHTS]
    if merged and readers:
        raise SystemExit(
            f'--merge: {", ".join(p.METHOD for p in readers)} computes with the trunk\'s '
            f'attention tensors directly, beside the trunk\'s forward where '
            f'{", ".join(p.METHOD for p in merged)} act through hooks; folding them into those '
            f'tensors would change what it computes (docs/methods.md, "BitFit"). Export without '
            f'--merge: the parts stay in the checkpoint')
    for part in merged:
        try:
            part.merge_into(backbone.trunk)
        except ValueError as e:  # this trunk has no tensor to fold the part into
            raise SystemExit(f'--merge: {e}') from e
    if not merged:
        raise SystemExit(f'--merge: none of the tuning parts of {type(backbone).__name__} '
                         f'({", ".join(type(p).__name__ for p in backbone.parts) or "none"}) '
                         f'folds into the trunk\'s weights; export without --merge')
    new_cfg = merged_config(cfg, merged)
    new_model = MODELS.build(new_cfg.model)
    backbone.save_frozen_trunk = True
    dropped = tuple(f'backbone.{p.NAME}.' for p in merged) + ('backbone.provenance',)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(dropped)}
    state['backbone.provenance'] = new_model.state_dict()['backbone.provenance']
    new_model.load_state_dict(state, strict=True)
    print(f'merged into the trunk\'s weights: {", ".join(p.METHOD for p in merged)}')
    return new_model, new_cfg


def main(argv=None):
    args = parse_args(argv)
    import mmseg_prompt  # noqa: F401
    from mmseg.registry import MODELS

    from mmseg_prompt.utils.atomic_checkpoint import write_atomically
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    backbone_cfg = cfg.model.get('backbone') or {}
    if backbone_cfg.get('trunk_dtype', 'float32') != 'float32':
        print(f'exporting the trunk in float32, the values of its file (the config stores it in '
              f'{backbone_cfg.trunk_dtype}: model.backbone.trunk_dtype)')
        backbone_cfg.trunk_dtype = 'float32'
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    ckpt = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    trunk_from = model.backbone.trunk_source
    out_cfg = None
    if args.merge:
        model, out_cfg = merge_parts(model, cfg)
    backbone = model.backbone
    backbone.save_frozen_trunk = True
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = dict(ckpt.get('meta', {}), exported_from=osp.abspath(args.checkpoint),
                trunk_from=trunk_from, merged=bool(args.merge))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    if out_cfg is not None:
        cfg_path = osp.splitext(args.out)[0] + '.py'
        write_atomically(cfg_path, lambda f: f.write(out_cfg.pretty_text.encode()))
        print(f'wrote {cfg_path}: the config the merged checkpoint loads with')
    write_atomically(args.out, lambda f: torch.save(dict(meta=meta, state_dict=state), f))
    n_trunk = sum(1 for k in state if k.startswith('backbone.trunk.'))
    print(f'wrote {args.out}: {len(state)} tensors ({n_trunk} of the frozen trunk), '
          f'{osp.getsize(args.out) / 2**20:.1f} MiB; the tuned checkpoint was '
          f'{osp.getsize(args.checkpoint) / 2**20:.1f} MiB')


if __name__ == '__main__':
    main()
