"""FLOPs and parameters of a config's model, without its trunk file.

    python tools/analysis/get_flops.py CONFIG [--shape H [W]] [--cfg-options key=value ...]
        [--json FILE]

The model is built with ``model.backbone.pretrained=None`` (a random trunk: the counts do not
depend on the weights, and nothing is loaded or downloaded), SyncBN as BN, in eval mode. FLOPs are
those of one forward of a (1, 3, H, W) input through backbone, neck and decode head (mmseg's
``mode='tensor'``; the auxiliary head only runs in training), counted by mmengine's FlopAnalyzer
with a formula for ``scaled_dot_product_attention``, as multiply-adds counted once (fvcore's and
mmengine's convention). The default shape is the config's crop (``model.data_preprocessor.size``);
a sliding-window test costs this times its number of windows. mmseg 1.2.2's own
``analysis_tools/get_flops.py`` needs the trunk file and then stops with ``"input_shape" and
"inputs" cannot be both set``.
"""
import argparse
import json

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='FLOPs and parameters of a config, no trunk file')
    p.add_argument('config', help='config file path')
    p.add_argument('--shape', type=int, nargs='+', metavar='H [W]',
                   help='input height and width (one value: square); default: the crop size')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of the config, as key=value pairs')
    p.add_argument('--json', metavar='FILE', help='also write the numbers to this file')
    return p.parse_args(argv)


def input_shape(cfg: Config, shape) -> tuple:
    """(H, W) from ``--shape``, else the config's crop size."""
    if shape:
        if len(shape) > 2:
            raise ValueError(f'--shape takes H or H W, got {len(shape)} values: {shape}')
        return (shape[0], shape[-1])
    size = (cfg.model.get('data_preprocessor') or {}).get('size')
    if size is None:
        raise ValueError('the config has no model.data_preprocessor.size (the crop size): pass '
                         '--shape H W')
    return tuple(size)


def build_without_trunk_file(cfg: Config):
    """The config's segmentor with a random trunk (no ``pretrained`` file), SyncBN as BN."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model
    for owner in (model_cfg, model_cfg.get('backbone') or {}):
        if 'pretrained' in owner:
            owner['pretrained'] = None
    return revert_sync_batchnorm(MODELS.build(model_cfg)).eval()


def count(model, shape: tuple) -> dict:
    """Parameters (total, trainable) and FLOPs per part, and the frozen trunk's parameters."""
    import torch

    from mmseg_prompt.tooling.complexity import SegmentorForward, flop_analyzer
    torch.manual_seed(0)
    with torch.no_grad():
        analyzer = flop_analyzer(SegmentorForward(model), (torch.randn(1, 3, *shape),))
        flops = analyzer.by_module()
    parts = {}
    for name, module in model.named_children():
        params = list(module.parameters())
        if params:
            parts[name] = dict(params=sum(p.numel() for p in params),
                               trainable=sum(p.numel() for p in params if p.requires_grad),
                               flops=flops.get(f'segmentor.{name}', 0))
    trunk = getattr(getattr(model, 'backbone', None), 'trunk', None)
    return dict(
        shape=list(shape), parts=parts, flops=analyzer.total(),
        params=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        trunk_params=None if trunk is None else sum(p.numel() for p in trunk.parameters()),
        trunk_trainable=None if trunk is None else sum(
            p.numel() for p in trunk.parameters() if p.requires_grad),
        not_counted=sorted(analyzer.unsupported_ops()))


def table(result: dict) -> str:
    def row(name, params, trainable, flops):
        gflops = '-' if flops is None else f'{flops / 1e9:.3f}'
        return f'| {name} | {params:,} ({params / 1e6:.2f}M) | {trainable:,} | {gflops} |'
    lines = ['| part | parameters | trainable | GFLOPs |', '|---|---|---|---|']
    for name, part in result['parts'].items():
        if name == 'auxiliary_head':  # not in the forward that is counted
            lines.append(row(f'{name} (training only)', part['params'], part['trainable'], None))
        else:
            lines.append(row(name, part['params'], part['trainable'], part['flops']))
        if name == 'backbone' and result['trunk_params'] is not None:
            lines.append(row('backbone: of which the frozen trunk', result['trunk_params'],
                             result['trunk_trainable'], None))
    lines.append(row('**total**', result['params'], result['trainable'], result['flops']))
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    import mmseg_prompt  # noqa: F401  (the config's custom_imports does the same)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    shape = input_shape(cfg, args.shape)
    result = dict(config=args.config, **count(build_without_trunk_file(cfg), shape))
    print(f'{args.config}: input 1x3x{shape[0]}x{shape[1]}, random trunk (the counts do not '
          f'depend on the weights)\n')
    print(table(result))
    print('\nGFLOPs: multiply-adds counted once (mmengine FlopAnalyzer). Operators without a FLOP '
          f'formula, not counted: {", ".join(result["not_counted"]) or "none"}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
