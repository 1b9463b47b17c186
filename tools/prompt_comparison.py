"""The papers' table in miniature: head-only vs VPT-Deep vs CVPT vs DA-VPT(+) on a tiny pretrained
trunk and a shifted synthetic task, through the user's tools (docs/comparison.md).

1. pretrains the tiny trunk on synthetic shape segmentation, or reuses the cached file;
2. writes the downstream task (hue pairs) in ADE20K's folder layout;
3. for every arm and seed: ``tools/train.py`` on the arm's config in
   ``configs/example/comparison/`` (seed set with ``--cfg-options randomness.seed=S``), then
   ``tools/test.py`` single-scale and with ``--tta``, each in a fresh interpreter;
4. prints the table (mIoU mean +- std over seeds, trainable parameters, training-step time, peak
   memory), writes it with every run's numbers to ``results.json`` and ``results.md``, plots mIoU
   against trainable parameters, and with ``--min-margin`` fails unless each of ``--margin-arms``
   beats head-only by that many mIoU points (single-scale means).

The full comparison: ``python tools/prompt_comparison.py`` (6 arms x 3 seeds).
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', 'example', 'comparison')
ARMS = {  # arm -> (table label, config)
    'head_only': ('head-only (linear probe)', 'head_only_tiny_hue_pairs.py'),
    'vpt': ('VPT-Deep, 10 prompts', 'vpt_tiny_hue_pairs.py'),
    'cvpt10': ('CVPT, 10 prompts', 'cvpt10_tiny_hue_pairs.py'),
    'cvpt50': ('CVPT, 50 prompts', 'cvpt50_tiny_hue_pairs.py'),
    'davpt': ('DA-VPT', 'davpt_tiny_hue_pairs.py'),
    'davpt_plus': ('DA-VPT+', 'davpt_plus_tiny_hue_pairs.py'),
}
BASELINE = 'head_only'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arms', default=','.join(ARMS), help=f'comma-separated, of {list(ARMS)}')
    p.add_argument('--seeds', default='0,1,2', help='comma-separated training seeds')
    p.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'prompt_comparison'))
    p.add_argument('--cache-dir', default=None,
                   help='where the pretrained trunk is cached (default: $MMSEG_PROMPT_CACHE/'
                        'trunks or ~/.cache/mmseg_prompt/trunks)')
    p.add_argument('--pretrain-steps', type=int, default=None,
                   help='pretraining steps (default: the recipe\'s 600; tests use fewer)')
    p.add_argument('--iters', type=int, default=None,
                   help='training iterations (default: the configs\' 400; tests use fewer)')
    p.add_argument('--num-train', type=int, default=200)
    p.add_argument('--num-val', type=int, default=60)
    p.add_argument('--threads', type=int, default=None,
                   help='torch threads of every run (default: torch\'s own choice)')
    p.add_argument('--no-tta', action='store_true', help='skip the --tta test')
    p.add_argument('--overlays', type=int, default=0,
                   help='draw this many validation images with every arm\'s prediction side by '
                        'side (first seed, single-scale)')
    p.add_argument('--min-margin', type=float, default=None,
                   help='fail unless each --margin-arms arm beats head-only by this many '
                        'single-scale mIoU points (mean over seeds)')
    p.add_argument('--margin-arms', default='vpt,cvpt10')
    p.add_argument('--no-plot', action='store_true')
    p.add_argument('--report-only', action='store_true',
                   help='train nothing: print the table, plot and margin check of the '
                        'results.json already in --work-dir')
    args = p.parse_args(argv)
    args.arms = [a for a in args.arms.split(',') if a]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f'unknown arm(s) {unknown}; choose from {list(ARMS)}')
    args.seeds = [int(s) for s in args.seeds.split(',') if s]
    args.margin_arms = [a for a in args.margin_arms.split(',') if a]
    if args.min_margin is not None:
        missing = [a for a in [BASELINE] + args.margin_arms if a not in args.arms]
        if missing:
            p.error(f'--min-margin compares {args.margin_arms} with {BASELINE}; add {missing} '
                    f'to --arms')
    return args


def run_tool(cmd: List[str], log_path: str, env: dict) -> int:
    """Run ``python <cmd>`` in a fresh interpreter, echo its progress lines, keep its full log.
    Returns the peak resident memory of that process in MiB (``wait4``'s ru_maxrss)."""
    shown = cmd[:cmd.index('--cfg-options')] if '--cfg-options' in cmd else cmd
    print('  $ python ' + ' '.join(osp.relpath(a, REPO) if osp.isabs(a) else a for a in shown)
          + (' --cfg-options ...' if shown != cmd else ''), flush=True)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen([sys.executable] + cmd, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        for line in proc.stdout:
            log.write(line)
            it = re.search(r'Iter\(train\) *\[ *\d+/\d+\]', line)
            if it:
                loss = re.search(r' loss: \S+', line)
                print(f'      {it.group(0)}{loss.group(0) if loss else ""}', flush=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-30:])
        sys.exit(f'ERROR: {" ".join(shown[:2])} failed (exit {proc.returncode}); log: '
                 f'{log_path}\n{tail}')
    return usage.ru_maxrss // 1024


def read_miou(work_dir: str) -> float:
    """mIoU from the metrics json that tools/test.py wrote under ``work_dir``."""
    metrics = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    if not metrics:
        sys.exit(f'ERROR: no metrics json under {work_dir}')
    with open(metrics[-1]) as f:
        return float(json.loads(f.readlines()[-1])['mIoU'])


def step_time(train_dir: str) -> float:
    """Mean seconds per training iteration, from mmengine's scalars.json (the ``time`` of every
    logged iteration but the first, which includes start-up)."""
    files = sorted(glob.glob(osp.join(train_dir, '*', 'vis_data', 'scalars.json')))
    times = []
    for line in open(files[-1]):
        rec = json.loads(line)
        if 'time' in rec and 'loss' in rec:
            times.append(rec['time'])
    return statistics.mean(times[1:] or times)


def arm_facts(config: str, overrides: Dict[str, str]) -> dict:
    """What the config, with the run's ``--cfg-options``, trains: trainable parameters of the
    segmentor it builds (prompts, deltas and head), iterations and batch size."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(overrides)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    return dict(trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                iters=cfg.train_cfg.max_iters, batch_size=cfg.train_dataloader.batch_size)


# label-file id -> BGR colour of the side-by-side overlays: the four hue-pair classes, then grey
# for any other of the head's 150 classes
CLASS_COLOURS = {1: (60, 60, 230), 2: (40, 200, 60), 3: (230, 120, 40), 4: (40, 210, 230)}


def side_by_side(work: str, data_root: str, arms: List[str], count: int) -> List[str]:
    """For the first ``count`` validation images: one PNG each, ``[image | ground truth | one
    prediction per arm]`` (first seed, single-scale, from ``tools/test.py --out``), 3x enlarged,
    each panel captioned. Returns the paths written."""
    import cv2
    import numpy as np
    out_dir = osp.join(work, 'overlays')
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    images = sorted(glob.glob(osp.join(data_root, 'images', 'validation', '*.jpg')))[:count]
    written = []

    def paint(label):
        rgb = np.full(label.shape + (3,), 128, np.uint8)
        for k, colour in CLASS_COLOURS.items():
            rgb[label == k] = colour
        return rgb

    for image_path in images:
        stem = osp.splitext(osp.basename(image_path))[0]
        ann = osp.join(data_root, 'annotations', 'validation', stem + '.png')
        panels = [cv2.imread(image_path), paint(cv2.imread(ann, cv2.IMREAD_GRAYSCALE))]
        captions = ['image', 'ground truth']
        for arm in arms:
            pred = glob.glob(osp.join(work, arm, '*', 'pred', stem + '.png'))
            panels.append(paint(cv2.imread(sorted(pred)[0], cv2.IMREAD_GRAYSCALE)))
            captions.append(ARMS[arm][0].split(' (')[0].split(',')[0])
        panels = [cv2.resize(p, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
                  for p in panels]
        strip = np.full((22, sum(p.shape[1] for p in panels), 3), 255, np.uint8)
        for i, caption in enumerate(captions):
            cv2.putText(strip, caption, (i * panels[0].shape[1] + 4, 16),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        path = osp.join(out_dir, stem + '.png')
        cv2.imwrite(path, np.vstack([strip, np.hstack(panels)]))
        written.append(path)
    return written


def mean_std(values: List[float]) -> str:
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}'


def table(results: dict, tta: bool) -> str:
    head = '| method | trainable params | mIoU single-scale |'
    rule = '|---|---:|---:|'
    if tta:
        head += ' mIoU multi-scale + flip |'
        rule += '---:|'
    head += ' train step (ms) | peak memory (MiB) |'
    rule += '---:|---:|'
    rows = [head, rule]
    for arm, r in results.items():
        runs = r['runs']
        row = (f'| {ARMS[arm][0]} | {r["trainable_params"]:,} | '
               f'{mean_std([x["miou_ss"] for x in runs])} |')
        if tta:
            row += f' {mean_std([x["miou_tta"] for x in runs])} |'
        row += (f' {statistics.mean(x["step_s"] for x in runs) * 1000:.0f} | '
                f'{max(x["peak_rss_mib"] for x in runs)} |')
        rows.append(row)
    return '\n'.join(rows)


def plot(results: dict, path: str) -> None:
    """mIoU (single-scale and multi-scale + flip, mean +- std over seeds) against trainable
    parameters, one labelled point per arm."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (arm, r) in enumerate(results.items()):
        colour = f'C{i}'
        for key, marker in (('miou_ss', 'o'), ('miou_tta', 's')):
            vals = [x[key] for x in r['runs'] if key in x]
            if not vals:
                continue
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            ax.errorbar(r['trainable_params'], statistics.mean(vals), yerr=std, fmt=marker,
                        color=colour, capsize=4, mfc='white' if key == 'miou_tta' else colour,
                        label=ARMS[arm][0] if key == 'miou_ss' else None)
    ax.set_xlabel('trainable parameters (head, prompts, bias deltas)')
    ax.set_ylabel('mIoU (%)')
    ax.set_title('tiny pretrained ViT, hue-pairs task: filled = single-scale, '
                 'open = multi-scale + flip', fontsize=9)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:,.0f}'))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    work = osp.abspath(args.work_dir)
    if args.report_only:
        path = osp.join(work, 'results.json')
        if not osp.isfile(path):
            sys.exit(f'ERROR: --report-only reads {path}, which does not exist; run the '
                     f'comparison with this --work-dir first')
        with open(path) as f:
            out = json.load(f)
        missing = [a for a in [BASELINE] + args.margin_arms if a not in out['arms']]
        if args.min_margin is not None and missing:
            sys.exit(f'ERROR: {path} has no results of {missing}, which --min-margin compares')
        report(out, work, args)
        return out
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from mmseg_prompt.testing.shape_tasks import make_hue_pairs_ade20k
    from mmseg_prompt.testing.tiny_trunk import cached_tiny_trunk

    os.makedirs(work, exist_ok=True)
    recipe = {'steps': args.pretrain_steps} if args.pretrain_steps else None
    print('[1/3] the pretrained tiny trunk', flush=True)
    trunk, trunk_info = cached_tiny_trunk(args.cache_dir, recipe,
                                          log=lambda m: print('  ' + m, flush=True))
    data_root = make_hue_pairs_ade20k(osp.join(work, 'data', 'hue_pairs'), args.num_train,
                                      args.num_val, seed=0)
    print(f'[2/3] the hue-pairs task in ADE20K layout: {args.num_train} training and '
          f'{args.num_val} validation images in {data_root}', flush=True)

    env = dict(os.environ)
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    results = {}
    n_runs = len(args.arms) * len(args.seeds)
    print(f'[3/3] {n_runs} runs: arms {args.arms} x seeds {args.seeds}', flush=True)
    for arm in args.arms:
        config = osp.join(CONFIG_DIR, ARMS[arm][1])
        runs = []
        for seed in args.seeds:
            overrides = {'model.backbone.pretrained': str(trunk),
                         'train_dataloader.dataset.data_root': data_root,
                         'val_dataloader.dataset.data_root': data_root,
                         'test_dataloader.dataset.data_root': data_root,
                         'randomness.seed': seed}
            if args.iters:  # the schedule shrunk in proportion (warm-up 5%)
                warmup = max(1, args.iters // 20)
                overrides.update({'train_cfg.max_iters': args.iters,
                                  'train_cfg.val_interval': args.iters,
                                  'default_hooks.checkpoint.interval': args.iters,
                                  'param_scheduler.0.end': warmup,
                                  'param_scheduler.1.begin': warmup,
                                  'param_scheduler.1.end': args.iters})
            options = ['--cfg-options'] + [f'{k}={v}' for k, v in overrides.items()]
            run_dir = osp.join(work, arm, f'seed{seed}')
            shutil.rmtree(run_dir, ignore_errors=True)
            os.makedirs(run_dir)
            print(f'{ARMS[arm][0]}, seed {seed}', flush=True)
            t_run = time.time()
            rss = run_tool([osp.join(REPO, 'tools', 'train.py'), config, '--work-dir',
                            osp.join(run_dir, 'train')] + options,
                           osp.join(run_dir, 'train.log'), env)
            with open(osp.join(run_dir, 'train', 'last_checkpoint')) as f:
                ckpt = f.read().strip()
            test = [osp.join(REPO, 'tools', 'test.py'), config, ckpt]
            pred = ['--out', osp.join(run_dir, 'pred')] if seed == args.seeds[0] else []
            run_tool(test + ['--work-dir', osp.join(run_dir, 'test_ss')] + pred + options,
                     osp.join(run_dir, 'test_ss.log'), env)
            run = dict(seed=seed, miou_ss=read_miou(osp.join(run_dir, 'test_ss')),
                       step_s=step_time(osp.join(run_dir, 'train')), peak_rss_mib=rss,
                       checkpoint=ckpt)
            if not args.no_tta:
                run_tool(test + ['--tta', '--work-dir', osp.join(run_dir, 'test_tta')] + options,
                         osp.join(run_dir, 'test_tta.log'), env)
                run['miou_tta'] = read_miou(osp.join(run_dir, 'test_tta'))
            print(f'  mIoU {run["miou_ss"]:.2f}'
                  + (f' (--tta {run["miou_tta"]:.2f})' if 'miou_tta' in run else '')
                  + f', {time.time() - t_run:.0f} s', flush=True)
            runs.append(run)
        facts = arm_facts(config, overrides)
        results[arm] = dict(config=osp.relpath(config, REPO), runs=runs,
                            trainable_params=facts['trainable_params'])

    if args.overlays:
        shown = side_by_side(work, data_root, args.arms, args.overlays)
        print(f'overlays (image, ground truth, then each arm\'s prediction): {len(shown)} PNG '
              f'in {osp.join(work, "overlays")}', flush=True)
    out = dict(arms=results, seeds=args.seeds, iters=facts['iters'],
               batch_size=facts['batch_size'],
               num_val=args.num_val, tta=not args.no_tta, trunk=str(trunk),
               trunk_info=trunk_info, seconds=round(time.time() - t0, 1))
    with open(osp.join(work, 'results.json'), 'w') as f:
        json.dump(out, f, indent=1)
    report(out, work, args)
    return out


def report(out: dict, work: str, args: argparse.Namespace) -> None:
    """Print and write the table (``results.md``), plot it, and apply ``--min-margin``."""
    results = out['arms']
    text = table(results, tta=out['tta'])
    info = out['trunk_info']
    summary = (f'tiny ViT pretrained on shapes ({info["recipe"]["steps"]} steps, held-out '
               f'patch accuracy {info["accuracy"]["all"]:.3f}, on shape patches '
               f'{info["accuracy"]["shapes"]:.3f}), hue-pairs task ({out["num_val"]} '
               f'validation images), {out["iters"]} iterations of batch {out["batch_size"]}, '
               f'seeds {out["seeds"]}; '
               f'mIoU (%) mean ± std over seeds')
    print(f'\n{summary}\n\n{text}\n', flush=True)
    with open(osp.join(work, 'results.md'), 'w') as f:
        f.write(f'{summary}\n\n{text}\n')
    if not args.no_plot:
        plot(results, osp.join(work, 'miou_vs_params.png'))
        print(f'plot: {osp.join(work, "miou_vs_params.png")}')
    print(f'results: {osp.join(work, "results.json")}; {out["seconds"]:.0f} s in all')
    if args.min_margin is None:
        return
    base = statistics.mean(x['miou_ss'] for x in results[BASELINE]['runs'])
    short = []
    for arm in args.margin_arms:
        gain = statistics.mean(x['miou_ss'] for x in results[arm]['runs']) - base
        print(f'{ARMS[arm][0]} - head-only: {gain:+.2f} mIoU (required: at least '
              f'{args.min_margin:+.2f})')
        if gain < args.min_margin:
            short.append(ARMS[arm][0])
    if short:
        sys.exit(f'ERROR: {", ".join(short)} did not beat head-only by {args.min_margin} mIoU '
                 f'points (single-scale, mean over seeds {out["seeds"]})')


if __name__ == '__main__':
    main()
