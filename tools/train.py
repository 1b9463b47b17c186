"""Train a segmentor: mmseg's `tools/train.py`, same flags, plus a dataset-layout check.

    python tools/train.py configs/cvpt_vitl_ade20k.py [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--compile] [--cfg-options key=value ...] [--launcher {none,pytorch,slurm,mpi}]

Checkpoints hold the tuned weights only (prompts, neck, heads); the frozen trunk is put back
from `model.backbone.pretrained` when they are loaded (`--resume`, `load_from`, tools/test.py).
"""
import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

CHECK_HOOKS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', '_base_',
                       'check_hooks.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor (mmseg-prompt)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest one in the work dir if no '
        'path is given')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='mixed precision: bfloat16 autocast where supported (CPU, recent '
                        'GPUs), else float16 with dynamic loss scaling')
    parser.add_argument('--compile', action='store_true', default=False,
                        help='torch.compile the training step (mmengine\'s `compile=True`: the '
                        'Runner compiles model.train_step, default inductor backend); a '
                        '`compile` setting in the config is kept')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, as key=value pairs (mmengine DictAction)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def add_check_hooks(cfg) -> None:
    """Add the hooks of configs/_base_/check_hooks.py (their one declaration; the schedule bases
    inherit it) that ``cfg`` lacks, by type: a config not built on those bases gets the checks
    too; an entry of the same name without a type (set by --cfg-options, e.g.
    ``default_hooks.stop_signal.signals`` from tools/slurm_train.sh) keeps its settings. The
    configs folder is this tool's sibling in the repository and in a wheel's .mim/."""
    cfg.setdefault('default_hooks', {})
    for name, hook in Config.fromfile(CHECK_HOOKS).default_hooks.items():
        if not any(isinstance(h, dict) and h.get('type') == hook['type']
                   for h in cfg.default_hooks.values()):
            own = cfg.default_hooks.get(name)
            cfg.default_hooks[name] = ({**hook, **own} if isinstance(own, dict)
                                       and 'type' not in own else hook)


def build_cfg(args) -> Config:
    from mmseg_prompt.tooling.tool_config import load_tool_config
    cfg = load_tool_config(args)
    if args.amp:
        from mmseg_prompt.engine import bf16_device
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper in ('AmpOptimWrapper', 'BF16OptimWrapper'):
            print_log('AMP training is already enabled in your config.', logger='current',
                      level=logging.WARNING)
        elif wrapper != 'OptimWrapper':
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper}')
        elif bf16_device():  # bfloat16: CPU, or a GPU that supports it; no loss scaling
            cfg.optim_wrapper.type = 'BF16OptimWrapper'
            print_log(f'--amp: bfloat16 autocast on {bf16_device()}', logger='current')
            store_trunk_in_bfloat16(cfg)
        else:  # float16 with dynamic loss scaling, mmseg's --amp
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.compile:
        if cfg.get('compile') is not None:
            print_log(f'--compile: the config already sets compile={cfg.compile!r}; kept',
                      logger='current', level=logging.WARNING)
        else:
            cfg.compile = True
            print_log('--compile: the Runner will torch.compile model.train_step (inductor); '
                      'the first iterations are slow while it compiles', logger='current')
    add_check_hooks(cfg)
    if args.resume == 'auto':  # mmseg's behaviour: the latest checkpoint in the work dir
        cfg.resume = True
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.resume is not None:
        check_resume_checkpoint(args, cfg)
    return cfg


def store_trunk_in_bfloat16(cfg: Config) -> None:
    """--amp with bfloat16: a frozen trunk of ours (a FrozenViT backbone) is stored in bfloat16,
    unless the config sets ``model.backbone.trunk_dtype`` itself."""
    from mmseg.registry import MODELS

    from mmseg_prompt.models.backbones import FrozenViT
    backbone = cfg.model.get('backbone') or {}
    kind = backbone.get('type')
    kind = MODELS.get(kind) if isinstance(kind, str) else kind
    if not (isinstance(kind, type) and issubclass(kind, FrozenViT)) or 'trunk_dtype' in backbone:
        return
    backbone.trunk_dtype = 'bfloat16'
    print_log('--amp: the frozen trunk is stored in bfloat16 (model.backbone.trunk_dtype): half '
              'its memory, no weight cast per step, the same results as the float32 trunk under '
              'autocast', logger='current')


def check_resume_checkpoint(args, cfg: Config) -> None:
    """Refuse to resume from a damaged checkpoint, naming it and the intact ones of its work
    dir with the command that resumes from the newest; nothing is deleted."""
    from mmseg_prompt.utils.checkpoint_files import (DamagedCheckpointError,
                                                     check_checkpoint_file,
                                                     intact_checkpoints, last_checkpoint)
    if args.resume == 'auto':
        path = last_checkpoint(cfg.work_dir)
        named = f' It is the one {cfg.work_dir}/last_checkpoint names.'
        if not path or not osp.isfile(path):
            return  # nothing to resume from: mmengine starts afresh, as mmseg does
    else:
        path, named = args.resume, ''
    try:
        check_checkpoint_file(path, what='the checkpoint to resume from')
    except DamagedCheckpointError as e:
        folder = osp.dirname(path) or '.'
        intact = [p for p in intact_checkpoints(folder) if osp.abspath(p) != osp.abspath(path)]
        if intact:
            listing = ', '.join(osp.basename(p) for p in intact)
            fix = (f'Intact checkpoints in {folder}: {listing}. Resume from the newest with: '
                   f'python tools/train.py {args.config} --resume {intact[0]}')
        else:
            fix = f'{folder} has no intact checkpoint: start again without --resume'
        raise DamagedCheckpointError(f'{e}{named} {fix} (nothing was deleted).') from e


def main(argv=None):
    args = parse_args(argv)
    import mmseg_prompt  # noqa: F401  (the config's custom_imports does the same)
    from mmseg_prompt.tooling.tool_config import check_and_prepare
    cfg = build_cfg(args)
    check_and_prepare(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
