"""The built-in example that `make demo` runs: CVPT learns a small synthetic ADE20K on a CPU.

1. writes a synthetic dataset in ADE20K's real folder layout (read by mmseg's ADE20KDataset);
2. saves a tiny timm ViT as the local "pretrained" trunk file;
3. evaluates the untrained model, trains CVPT with `tools/train.py` on
   `configs/example/cvpt_tiny_ade20k_synthetic.py`, and tests both with `tools/test.py`,
   single-scale and `--tta` (multi-scale + flip);
4. prints the mIoU table, saves prediction overlays as PNG, and fails unless training clearly
   beat the untrained model.

Usage: python tools/demo.py [--work-dir demo_out] [--iters N]
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/example/cvpt_tiny_ade20k_synthetic.py'
MIN_GAIN = 20.0  # mIoU points the trained model must beat the untrained one by


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--work-dir', default=osp.join(REPO, 'demo_out'))
    p.add_argument('--config', default=osp.join(REPO, CONFIG))
    p.add_argument('--iters', type=int, default=None, help='training iterations (config: 300)')
    p.add_argument('--num-train', type=int, default=40)
    p.add_argument('--num-val', type=int, default=12)
    p.add_argument('--overlays', type=int, default=3, help='prediction overlays to keep')
    return p.parse_args(argv)


def run_tool(args, log_path):
    """Run a tool in a fresh interpreter, echo its progress lines, keep its full log."""
    cmd = [sys.executable] + args
    shown = args[:args.index('--cfg-options')] if '--cfg-options' in args else args
    print('$ ' + ' '.join(osp.relpath(a, REPO) if osp.isabs(a) else a for a in shown)
          + (' --cfg-options <trunk file and data_root>' if shown != args else ''), flush=True)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            log.write(line)
            parts = [re.search(p, line) for p in
                     (r'Iter\(\w+\) *\[ *\d+/\d+\]', r'eta: \S+', r'loss: \S+|aAcc: .*mAcc: \S+')]
            if parts[0]:
                print('    ' + '  '.join(m.group(0) for m in parts if m), flush=True)
            elif re.search(r'Error|error:', line):
                print('    ' + line.rstrip(), flush=True)
        proc.wait()
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-30:])
        sys.exit(f'ERROR: {" ".join(args[:2])} failed (exit {proc.returncode}); '
                 f'log: {log_path}\n{tail}')


def test_miou(common, ckpt, work_dir, tta=False, show_dir=None):
    """tools/test.py on ``ckpt``; returns the mIoU it reports (from its metrics json)."""
    args = [osp.join(REPO, 'tools/test.py'), CONFIG_PATH, ckpt, '--work-dir', work_dir] + common
    if tta:
        args.insert(3, '--tta')
    if show_dir:
        args += ['--show-dir', show_dir]
    os.makedirs(work_dir, exist_ok=True)
    run_tool(args, osp.join(work_dir, 'test.log'))
    metrics = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    with open(metrics[-1]) as f:
        return json.loads(f.readlines()[-1])['mIoU']


def save_untrained(cfg_path, overrides, out):
    """The example's model as built and initialised, saved as a (tuned-weights-only) checkpoint."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed
    from mmseg.registry import MODELS
    cfg = Config.fromfile(cfg_path)
    cfg.merge_from_dict(overrides)
    init_default_scope('mmseg')
    set_random_seed(cfg.randomness.seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(meta=dict(note='untrained'), state_dict=model.state_dict()), out)


def main(argv=None):
    global CONFIG_PATH
    args = parse_args(argv)
    CONFIG_PATH = args.config
    t0 = time.time()
    from mmengine.config import Config

    import mmseg_prompt  # noqa: F401
    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk

    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    data_root = make_synthetic_ade20k(osp.join(work, 'data', 'ade'), num_train=args.num_train,
                                      num_val=args.num_val, seed=0)
    print(f'[1/4] synthetic ADE20K-layout dataset: {args.num_train} training and {args.num_val} '
          f'validation images in {osp.relpath(data_root, REPO)}')

    cfg = Config.fromfile(args.config)
    bb = cfg.model.backbone
    trunk_file = osp.join(work, 'tiny_vit_trunk.pth')
    trunk = save_random_trunk(bb, trunk_file, seed=0)
    print(f'[2/4] a tiny {bb.model_name} trunk ({sum(p.numel() for p in trunk.parameters()):,} '
          f'params, {bb.model_kwargs}) saved as the local pretrained file {trunk_file}')

    overrides = {'model.backbone.pretrained': trunk_file,
                 'train_dataloader.dataset.data_root': data_root,
                 'val_dataloader.dataset.data_root': data_root,
                 'test_dataloader.dataset.data_root': data_root}
    if args.iters:
        overrides['train_cfg.max_iters'] = args.iters
    common = ['--cfg-options'] + [f'{k}={v}' for k, v in overrides.items()]

    untrained = osp.join(work, 'untrained.pth')
    save_untrained(args.config, overrides, untrained)
    train_dir = osp.join(work, 'train')
    shutil.rmtree(train_dir, ignore_errors=True)
    print(f'[3/4] training CVPT with tools/train.py (log: {osp.relpath(train_dir, REPO)})')
    t_train = time.time()
    run_tool([osp.join(REPO, 'tools/train.py'), args.config, '--work-dir', train_dir] + common,
             osp.join(work, 'train.log'))
    t_train = time.time() - t_train
    with open(osp.join(train_dir, 'last_checkpoint')) as f:
        trained = f.read().strip()
    print(f'    trained in {t_train:.0f} s; checkpoint {osp.relpath(trained, REPO)} '
          f'({osp.getsize(trained) / 1024:.0f} KiB, tuned weights only; the trunk file is '
          f'{osp.getsize(trunk_file) / 1024:.0f} KiB)')

    print('[4/4] testing with tools/test.py: single-scale and --tta (multi-scale + flip)')
    shows = osp.join(work, 'test_trained_ss', 'show')
    results = {}
    for name, ckpt in [('untrained', untrained), ('CVPT trained', trained)]:
        tag = name.split()[-1]
        results[name] = (
            test_miou(common, ckpt, osp.join(work, f'test_{tag}_ss'),
                      show_dir=shows if tag == 'trained' else None),
            test_miou(common, ckpt, osp.join(work, f'test_{tag}_tta'), tta=True))

    overlay_dir = osp.join(work, 'overlays')
    shutil.rmtree(overlay_dir, ignore_errors=True)
    os.makedirs(overlay_dir)
    drawn = sorted(glob.glob(osp.join(shows, '**', '*.png'), recursive=True))
    for path in drawn[:args.overlays]:
        shutil.copy(path, overlay_dir)

    iters = args.iters or cfg.train_cfg.max_iters
    print(f'\nsynthetic ADE20K ({args.num_val} validation images), tools/test.py mIoU (%):\n')
    print('| model | single-scale | multi-scale + flip (--tta) |')
    print('|---|---|---|')
    for name, (ss, ms) in results.items():
        label = f'{name}, {iters} iterations' if name != 'untrained' else name
        print(f'| {label} | {ss:.2f} | {ms:.2f} |')
    print(f'\noverlays (input, ground truth | prediction): {osp.relpath(overlay_dir, REPO)}/ '
          f'({len(os.listdir(overlay_dir))} PNG)')
    print(f'demo finished in {time.time() - t0:.0f} s')
    gain = results['CVPT trained'][0] - results['untrained'][0]
    if gain < MIN_GAIN:
        sys.exit(f'ERROR: training gained only {gain:.1f} mIoU points over the untrained model '
                 f'(expected at least {MIN_GAIN}): the example did not learn')


if __name__ == '__main__':
    main()
