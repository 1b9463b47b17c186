"""A real-size run of the shipped configs on a GPU: the path users take, minus the real data.

    python tools/analysis/real_size_run.py [--configs configs/cvpt_vitl_ade20k.py ...]
        [--iters 50] [--resume-iters 60] [--gpus 1] [--no-amp] [--work-dir DIR]

For each config (default: CVPT, VPT-Deep and DA-VPT+ on ADE20K):

1. ``tools/dist_train.sh CONFIG GPUS --amp`` for ``--iters`` iterations (torchrun, so DDP, the
   NCCL backend and SyncBN run even with one GPU), a checkpoint at the end;
2. ``--resume`` from that checkpoint to ``--resume-iters`` (optimizer, scheduler and RNG states,
   CUDA's included, come back from it);
3. ``tools/test.py CONFIG CKPT --tta`` (multi-scale + flip, sliding windows).

The data is a synthetic ADE20K at real image sizes (512-683 px a side) in the real folder
layout, and the trunk a seeded random ViT-L saved as the local pretrained file; nothing is
downloaded. The mIoU of such a run means nothing; the step time and peak memory do. Prints a
markdown table (step time: the mean of the last logging window, mmengine's ``time``; memory:
mmengine's ``memory``, the CUDA allocator's peak in MiB) and writes ``results.json``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIGS = ['configs/cvpt_vitl_ade20k.py', 'configs/vpt_vitl_ade20k.py',
                   'configs/davpt_plus_vitl_ade20k.py']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS)
    p.add_argument('--iters', type=int, default=50)
    p.add_argument('--resume-iters', type=int, default=60)
    p.add_argument('--gpus', type=int, default=1)
    p.add_argument('--log-interval', type=int, default=10,
                   help='iterations per log line; the step time is the mean of the last window')
    p.add_argument('--no-amp', action='store_true', help='train in fp32 instead of --amp')
    p.add_argument('--num-train', type=int, default=16)
    p.add_argument('--num-val', type=int, default=4)
    p.add_argument('--image-size', type=int, nargs=2, default=(512, 683),
                   help='range of the synthetic images\' sides (ADE20K: about 512 short side)')
    p.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'real_size_run'))
    return p.parse_args(argv)


def run(cmd, log_path, env=None):
    """Run ``cmd`` from the repo root, log to ``log_path``; exit with the log tail on failure.
    Returns the seconds it took."""
    from mmseg_prompt.utils.logged_run import run_logged
    print('$ ' + ' '.join(cmd[:4]) + ' ...', flush=True)
    done = run_logged(cmd, log_path, cwd=REPO, env=dict(os.environ, **(env or {})), tail_lines=40,
                      error=lambda rc: f'ERROR: exit {rc}: {" ".join(cmd)}\nlog {log_path}:\n')
    return done.seconds


def last_train_stats(log_path):
    """(iteration, time s/iter, memory MiB or None) of the last ``Iter(train)`` line of an
    mmengine log (mmengine logs ``memory`` on CUDA only)."""
    text = open(log_path).read()
    lines = re.findall(r'Iter\(train\) \[\s*(\d+)/\d+\].*?time: ([\d.]+)(.*)', text)
    if not lines:
        sys.exit(f'ERROR: no training progress lines in {log_path}')
    it, t, rest = lines[-1]
    mem = re.search(r'memory: (\d+)', rest)
    return int(it), float(t), int(mem.group(1)) if mem else None


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config

    import mmseg_prompt  # noqa: F401
    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk

    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    data_root = make_synthetic_ade20k(osp.join(work, 'data', 'ade'), num_train=args.num_train,
                                      num_val=args.num_val, size_range=tuple(args.image_size),
                                      seed=0)
    print(f'synthetic ADE20K, sides {args.image_size[0]}-{args.image_size[1]} px: '
          f'{args.num_train} + {args.num_val} images in '
          f'{data_root}', flush=True)
    trunks, rows = {}, []
    for config in args.configs:
        name = osp.splitext(osp.basename(config))[0]
        cfg = Config.fromfile(osp.join(REPO, config))
        bb = cfg.model.backbone
        key = (bb.model_name, bb.img_size)
        if key not in trunks:
            trunks[key] = osp.join(work, f'{bb.model_name}_{bb.img_size}_random.pth')
            save_random_trunk(bb, trunks[key], seed=0)
            print(f'random {bb.model_name} trunk saved as {trunks[key]} '
                  f'({osp.getsize(trunks[key]) / 2**20:.0f} MiB)', flush=True)
        out = osp.join(work, name)
        common = [f'model.backbone.pretrained={trunks[key]}',
                  f'train_dataloader.dataset.data_root={data_root}',
                  f'val_dataloader.dataset.data_root={data_root}',
                  f'test_dataloader.dataset.data_root={data_root}',
                  f'default_hooks.logger.interval={args.log_interval}']
        train = ['bash', 'tools/dist_train.sh', config, str(args.gpus), '--work-dir', out]
        train += [] if args.no_amp else ['--amp']
        env = dict(PYTHON=sys.executable, PORT=str(29500 + len(rows)))
        t_train = run(train + ['--cfg-options', *common, f'train_cfg.max_iters={args.iters}',
                               f'default_hooks.checkpoint.interval={args.iters}',
                               f'train_cfg.val_interval={10 * args.resume_iters}'],
                      osp.join(work, f'{name}_train.log'), env)
        ckpt = osp.join(out, f'iter_{args.iters}.pth')
        it, step, mem = last_train_stats(osp.join(work, f'{name}_train.log'))
        t_resume = run(train + ['--resume', ckpt, '--cfg-options', *common,
                                f'train_cfg.max_iters={args.resume_iters}',
                                f'default_hooks.checkpoint.interval={args.resume_iters}',
                                f'train_cfg.val_interval={10 * args.resume_iters}'],
                       osp.join(work, f'{name}_resume.log'), env)
        resume_log = open(osp.join(work, f'{name}_resume.log')).read()
        resumed = re.search(rf'resumed epoch: \d+, iter: {args.iters}', resume_log) is not None
        it2, step2, mem2 = last_train_stats(osp.join(work, f'{name}_resume.log'))
        final = osp.join(out, f'iter_{args.resume_iters}.pth')
        t_test = run([sys.executable, 'tools/test.py', config, final, '--tta', '--work-dir',
                      osp.join(out, 'test_tta'), '--cfg-options', *common],
                     osp.join(work, f'{name}_test_tta.log'))
        metrics = sorted(glob.glob(osp.join(out, 'test_tta', '*', '*.json')))
        miou = json.loads(open(metrics[-1]).readlines()[-1])['mIoU']
        backend = re.search(r"'backend': '(\w+)'", open(osp.join(work, f'{name}_train.log'))
                            .read())
        rows.append(dict(config=config, crop=list(cfg.crop_size),
                         batch=cfg.train_dataloader.batch_size,
                         backend=backend.group(1) if backend else '?',
                         step_s=step, peak_mib=mem, last_iter=it, resumed=resumed,
                         resume_last_iter=it2, resume_step_s=step2, resume_peak_mib=mem2,
                         tta_miou=miou, checkpoint_mib=round(osp.getsize(final) / 2**20, 1),
                         train_s=round(t_train), resume_s=round(t_resume), test_s=round(t_test)))
        print(json.dumps(rows[-1]), flush=True)
    with open(osp.join(work, 'results.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    amp = 'fp32' if args.no_amp else '--amp (bf16)'
    crops = sorted({f'{r["crop"][0]}x{r["crop"][1]} crops, batch {r["batch"]} per process'
                    for r in rows})
    print(f'\n{args.gpus} process(es), {"; ".join(crops)}, {amp}; step time over '
          f'iterations {args.iters - args.log_interval + 1}-{args.iters}\n')
    print('| config | backend | train step | peak memory | resumed at iter '
          f'{args.iters} -> {args.resume_iters} | checkpoint | '
          f'--tta test ({args.num_val} images) |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {osp.basename(r["config"])} | {r["backend"]} | {r["step_s"]:.3f} s | '
              f'{r["peak_mib"] or "n/a"} MiB | {"yes" if r["resumed"] else "NO"} '
              f'(iter {r["resume_last_iter"]}, {r["resume_step_s"]:.3f} s/step) | '
              f'{r["checkpoint_mib"]} MiB | {r["test_s"]} s, mIoU {r["tta_miou"]:.2f} |')
    if not all(r['resumed'] and r['resume_last_iter'] == args.resume_iters for r in rows):
        sys.exit('ERROR: a run did not resume from its checkpoint to the last iteration')


if __name__ == '__main__':
    main()
