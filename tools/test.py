"""Test a segmentor: mmseg's `tools/test.py`, same flags, plus `--tta-style` and a layout check.

    python tools/test.py CONFIG CHECKPOINT [--tta [--tta-style {1.x,0.x}]] [--out DIR]
        [--show-dir DIR] [--work-dir DIR] [--cfg-options ...] [--launcher ...]

Single-scale by default. `--tta`: multi-scale (ratios 0.5-1.75) with flip, averaging softmax.
`--tta-style 1.x` (default, mmseg 1.x's `tta_pipeline`) scales the original image;
`--tta-style 0.x` uses the config's `tta_pipeline_0x`, which scales the canonical test scale as
mmseg 0.x did (the papers' multi-scale numbers). The checkpoint may hold tuned weights only:
the frozen trunk comes from `model.backbone.pretrained`.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a segmentor (mmseg-prompt)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (tuned weights only, or full)')
    parser.add_argument('--work-dir', help='where the metrics are dumped as json')
    parser.add_argument('--out', type=str,
                        help='directory to save the predicted label maps (PNG) for offline '
                        'evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images are saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, as key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--tta', action='store_true', help='multi-scale and flip test')
    parser.add_argument('--tta-style', choices=['1.x', '0.x'], default='1.x',
                        help='1.x: ratios of the original image (mmseg 1.x, default); 0.x: '
                        'ratios of the canonical test scale (mmseg 0.x, the papers)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args) -> Config:
    from mmseg_prompt.tooling.tool_config import load_tool_config
    cfg = load_tool_config(args)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    from mmseg_prompt.utils.checkpoint_files import check_checkpoint_file
    check_checkpoint_file(args.checkpoint, fix='Copy it again from where it was saved, or test '
                          'another checkpoint of its work dir.')
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise RuntimeError('--show/--show-dir need `default_hooks.visualization=dict('
                               'type="SegVisualizationHook")` in the config')
        hook['draw'] = True
        if args.show:
            hook['show'] = True
            hook['wait_time'] = args.wait_time
        if args.show_dir:
            cfg.visualizer['save_dir'] = args.show_dir
    if args.tta:
        key = 'tta_pipeline' if args.tta_style == '1.x' else 'tta_pipeline_0x'
        if cfg.get(key) is None or cfg.get('tta_model') is None:
            raise KeyError(f'--tta --tta-style {args.tta_style} needs `{key}` and `tta_model` in '
                           f'the config (see configs/_base_/datasets/)')
        cfg.test_dataloader.dataset.pipeline = cfg[key]
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    elif args.tta_style != '1.x':
        raise ValueError('--tta-style is for multi-scale testing: add --tta')
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import mmseg_prompt  # noqa: F401  (the config's custom_imports does the same)
    from mmseg_prompt.tooling.tool_config import check_and_prepare
    cfg = build_cfg(args)
    check_and_prepare(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
