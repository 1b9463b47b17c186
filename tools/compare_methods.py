"""The papers' table in miniature: tuning methods (head-only, VPT-Deep, CVPT, DA-VPT(+), LoRA,
AdaptFormer) on tiny pretrained trunks and a shifted synthetic task, through the user's tools
(docs/comparison.md).

An arm is a config file in ``configs/example/comparison/`` (``--config-dir``) whose name does not
start with ``_``: the arm is named by the file's stem less ``_tiny_hue_pairs``, and the file
itself assigns its table label and, optionally, its place among the arms::

    comparison_label = 'VPT-Deep, 10 prompts'
    comparison_order = 20  # ascending; arms without one come last, by name

mmengine keeps them as plain keys of the config, which tools/train.py, tools/test.py and the
Runner leave alone; a new arm is one new file, with no edit here.

1. pretrains one tiny trunk per pretraining seed and CPU kernel set
   (``tools/pretrain_tiny_trunk.py`` in a fresh interpreter, ``ATEN_CPU_CAPABILITY`` set for
   every set but ``native``), or reuses the cached files. Under the kernel set ``pinned``
   (``mmseg_prompt/utils/pinned_numerics.py``: AVX2 caps for ATen and oneDNN, MKL's
   reproducible code path, 2 threads, deterministic algorithms) every x86-64 machine makes the
   same trunk and the same results; under the others each machine rounds its own way and makes
   its own trunk, which makes the trunk a factor of the comparison;
2. writes the downstream task (hue pairs) in ADE20K's folder layout;
3. for every trunk, arm and training seed: ``tools/train.py`` on the arm's config (seed set
   with ``--cfg-options randomness.seed=S``), then ``tools/test.py`` single-scale and with
   ``--tta``, each in a fresh interpreter under the trunk's kernel set. A stage whose outputs
   are there from an earlier run with the same options is skipped, as ``tools/reproduce.py``
   does (``mmseg_prompt/utils/finished_stages.py``): the options (the arm's resolved config,
   the ``--cfg-options``, the trunk's sha256, the kernel set, the thread count, the data) are
   kept in the run's ``options.json``, and a run with other options starts afresh;
4. prints the table (mIoU mean +- std over trunks x seeds, the std across trunks, the gain over
   head-only on the same trunk and seed, trainable parameters, training-step time, peak memory)
   and each trunk's mIoU, writes them with every run's numbers and every trunk's provenance
   (recipe, accuracy, sha256, kernel set) to ``results.json`` and ``results.md`` (each through
   a temporary file and a rename), plots mIoU
   against trainable parameters, and with ``--min-margin`` fails unless each of
   ``--margin-arms`` beats head-only by that many mIoU points (single-scale, mean of the paired
   gains).

The full comparison: ``python tools/compare_methods.py`` (every arm on every trunk and seed of
the defaults; docs/comparison.md gives the command's time and output).
"""
import argparse
import ast
import glob
import hashlib
import json
import os
import os.path as osp
import platform
import re
import shlex
import shutil
import statistics
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmseg_prompt.utils.pinned_numerics import (PINNED, PINNED_THREADS, pinned_environment,
                                                pins_apply)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', 'example', 'comparison')
ARM_SUFFIX = '_tiny_hue_pairs'  # left out of an arm's name
LABEL_KEY, ORDER_KEY = 'comparison_label', 'comparison_order'
BASELINE = 'head_only'
NATIVE = 'native'  # the kernel set torch picks on the machine (ATEN_CPU_CAPABILITY unset)
DATA_SEED = 0  # of the hue-pairs task


class Arm(NamedTuple):
    name: str  # the config's file stem less ARM_SUFFIX
    label: str  # its row in the tables
    config: str  # absolute path
    order: Optional[float]


def own_assignments(path: str) -> Dict[str, object]:
    """The literal values ``path`` itself assigns at its top level (not those of the configs it
    inherits), read from its source."""
    values = {}
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:  # not a literal (a dict(...) call, a {{_base_.x}} reference)
                continue
    return values


def discover_arms(config_dir: str) -> Dict[str, Arm]:
    """The arms in ``config_dir``: every ``*.py`` not starting with ``_``, each assigning its
    own ``comparison_label`` (a string, unique among the arms) and optionally a numeric
    ``comparison_order``; ordered by that (arms without one last), then by name. Raises
    ValueError naming the file and the fix."""
    arms = []
    for path in sorted(glob.glob(osp.join(osp.abspath(config_dir), '[!_]*.py'))):
        stem = osp.splitext(osp.basename(path))[0]
        name = stem[:-len(ARM_SUFFIX)] if stem.endswith(ARM_SUFFIX) else stem
        values = own_assignments(path)
        label, order = values.get(LABEL_KEY), values.get(ORDER_KEY)
        if not isinstance(label, str) or not label:
            raise ValueError(
                f'{path} assigns no {LABEL_KEY}: every config in {config_dir} whose name does '
                f'not start with "_" is an arm and names its row of the tables itself, e.g. '
                f"{LABEL_KEY} = 'VPT-Deep, 10 prompts' (a shared base file starts with \"_\")")
        if order is not None and (isinstance(order, bool) or
                                  not isinstance(order, (int, float))):
            raise ValueError(f'{path}: {ORDER_KEY} = {order!r} must be a number (the arm\'s '
                             f'place among the arms, ascending)')
        arms.append(Arm(name, label, path, order))
    labels = [a.label for a in arms]
    twice = sorted({a.label for a in arms if labels.count(a.label) > 1})
    if twice:
        raise ValueError(f'arms of {config_dir} share a {LABEL_KEY} ({twice}: ' + ', '.join(
            osp.basename(a.config) for a in arms if a.label in twice) + '); give each its own')
    if not arms:
        raise ValueError(f'no arm config (*.py not starting with "_") in {config_dir}')
    arms.sort(key=lambda a: (a.order is None, a.order or 0, a.name))
    return {a.name: a for a in arms}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arms', default=None,
                   help='comma-separated arm names (default: every arm of --config-dir, in '
                        f'their {ORDER_KEY})')
    p.add_argument('--config-dir', default=CONFIG_DIR,
                   help='the folder of the arm configs (default: configs/example/comparison)')
    p.add_argument('--seeds', default='0,1', help='comma-separated training seeds')
    p.add_argument('--trunk-seeds', default='0,1,2',
                   help='comma-separated pretraining seeds: one trunk each per kernel set')
    p.add_argument('--cpu-capabilities', default=f'{NATIVE},avx2',
                   help=f'comma-separated CPU kernel sets to make trunks and run with: '
                        f'{PINNED} (the pinned numerics: the same results on every x86-64 '
                        f'machine; docs/advanced_guides/pinned_numerics.md), {NATIVE} (torch\'s '
                        f'choice on the machine it runs on) or a value of ATEN_CPU_CAPABILITY '
                        f'(default, avx2, avx512, ...)')
    p.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'compare_methods'))
    p.add_argument('--cache-dir', default=None,
                   help='where the pretrained trunk is cached (default: $MMSEG_PROMPT_CACHE/'
                        'trunks or ~/.cache/mmseg_prompt/trunks)')
    p.add_argument('--pretrain-steps', type=int, default=None,
                   help='pretraining steps (default: the recipe\'s; tests use fewer)')
    p.add_argument('--pretrain-options', default='',
                   help='more options of tools/pretrain_tiny_trunk.py, e.g. '
                        '"--hue-invariance 1 --colour-kept 1" (docs/comparison.md)')
    p.add_argument('--iters', type=int, default=None,
                   help='training iterations (default: the configs\'; tests use fewer)')
    p.add_argument('--num-train', type=int, default=200)
    p.add_argument('--num-val', type=int, default=60)
    p.add_argument('--threads', type=int, default=None,
                   help=f'torch threads of every run (default: torch\'s own choice; '
                        f'{PINNED} runs with its own, {PINNED_THREADS})')
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
    try:
        known = discover_arms(args.config_dir)
    except ValueError as e:
        p.error(str(e))
    names = list(known) if args.arms is None else [a for a in args.arms.split(',') if a]
    unknown = [a for a in names if a not in known]
    if unknown:
        p.error(f'unknown arm(s) {unknown}; the configs in {args.config_dir} make '
                f'{list(known)}')
    args.arms = {a: known[a] for a in names}  # name -> Arm, in the order given
    args.known_arms = known
    args.seeds = [int(s) for s in args.seeds.split(',') if s]
    args.trunk_seeds = [int(s) for s in args.trunk_seeds.split(',') if s]
    args.cpu_capabilities = [c for c in args.cpu_capabilities.split(',') if c]
    if not (args.seeds and args.trunk_seeds and args.cpu_capabilities):
        p.error('--seeds, --trunk-seeds and --cpu-capabilities each need at least one value')
    if PINNED in args.cpu_capabilities and args.threads not in (None, PINNED_THREADS):
        p.error(f'--threads {args.threads}: the kernel set {PINNED} runs {PINNED_THREADS} '
                f'threads, part of what makes its results the same on every machine; leave '
                f'--threads out, or use another kernel set (e.g. {NATIVE}) to choose the threads')
    args.margin_arms = [a for a in args.margin_arms.split(',') if a]
    if args.min_margin is not None:
        missing = [a for a in [BASELINE] + args.margin_arms if a not in args.arms]
        if missing:
            p.error(f'--min-margin compares {args.margin_arms} with {BASELINE}; add {missing} '
                    f'to --arms')
    return args


def capability_env(env: dict, capability: str) -> dict:
    """``env`` with ``ATEN_CPU_CAPABILITY`` set to ``capability`` (removed for native), or with
    the pinned numerics' variables for ``pinned``."""
    if capability == PINNED:
        return pinned_environment(env)
    env = dict(env)
    env.pop('ATEN_CPU_CAPABILITY', None)
    if capability != NATIVE:
        env['ATEN_CPU_CAPABILITY'] = capability
    return env


def trunk_name(capability: str, seed: int) -> str:
    return f'{capability}-s{seed}'


def overlay_run(args: argparse.Namespace) -> Tuple[str, int]:
    """The (trunk, training seed) whose predictions are kept (``--out``) and drawn as overlays:
    the first of each."""
    return trunk_name(args.cpu_capabilities[0], args.trunk_seeds[0]), args.seeds[0]


def pretrain_trunk(args: argparse.Namespace, capability: str, seed: int, env: dict,
                   log_path: str) -> dict:
    """The trunk of pretraining ``seed`` made with ``capability``'s kernels, by
    ``tools/pretrain_tiny_trunk.py`` in a fresh interpreter (or its cache), its output echoed
    whole and kept in ``log_path``: its path and the provenance beside it (recipe, held-out
    accuracy, the kernel set torch reported, sha256)."""
    cmd = [osp.join(REPO, 'tools', 'pretrain_tiny_trunk.py'), '--seed', str(seed)]
    if args.cache_dir:  # the tool runs in the repository: the folder as the user meant it
        cmd += ['--cache-dir', osp.abspath(args.cache_dir)]
    if args.pretrain_steps:
        cmd += ['--steps', str(args.pretrain_steps)]
    cmd += shlex.split(args.pretrain_options)
    if capability == PINNED:
        cmd.append('--deterministic')
    run_tool(cmd, log_path, capability_env(env, capability), capability,
             echo=lambda line: line.strip())
    with open(log_path) as f:
        path = f.read().strip().splitlines()[-1].strip()  # the tool's last line: the file
    with open(osp.splitext(path)[0] + '.json') as f:
        info = json.load(f)
    return dict(path=path, seed=seed, requested_capability=capability, **info)


def training_progress(line: str) -> Optional[str]:
    """The iteration and loss of one of mmengine's training log lines, or None for the rest."""
    it = re.search(r'Iter\(train\) *\[ *\d+/\d+\]', line)
    if not it:
        return None
    loss = re.search(r' loss: \S+', line)
    return '  ' + it.group(0) + (loss.group(0) if loss else '')


def run_tool(cmd: List[str], log_path: str, env: dict, capability: str,
             echo: Callable[[str], Optional[str]] = training_progress) -> int:
    """Run ``python <cmd>`` in a fresh interpreter with ``env`` (that of the kernel set
    ``capability``: ``capability_env``), keep its full log, and print what ``echo`` makes of each
    output line (nothing for None); exit with the log's tail if it fails, naming the command and
    the kernel set. Returns the peak resident memory of that process in MiB
    (``wait4``'s ru_maxrss)."""
    from mmseg_prompt.utils.logged_run import run_logged
    shown = cmd[:cmd.index('--cfg-options')] if '--cfg-options' in cmd else cmd
    command = 'python ' + ' '.join(osp.relpath(a, REPO) if osp.isabs(a) else a for a in shown) \
        + (' --cfg-options ...' if shown != cmd else '')
    print('  $ ' + command, flush=True)
    kernels = {PINNED: ' under the pinned numerics', NATIVE: ''}.get(
        capability, f' under ATEN_CPU_CAPABILITY={capability}')
    done = run_logged([sys.executable] + cmd, log_path, cwd=REPO, env=env, echo=echo,
                      error=lambda rc: f'ERROR: {command}{kernels} failed (exit {rc}); log: '
                                       f'{log_path}\n')
    return done.peak_rss_mib


def read_miou(work_dir: str) -> float:
    """mIoU from the metrics json that tools/test.py wrote under ``work_dir``."""
    from mmseg_prompt.utils.run_records import NoRecordError, test_metrics
    try:
        return float(test_metrics(work_dir)['mIoU'])
    except NoRecordError as e:
        sys.exit(f'ERROR: {e}')


def step_time(train_dir: str) -> float:
    """Mean seconds per training iteration, from mmengine's scalars.json (the ``time`` of every
    logged iteration but the first, which includes start-up)."""
    from mmseg_prompt.utils.run_records import train_scalars
    times = [r['time'] for r in train_scalars(train_dir) if 'time' in r and 'loss' in r]
    return statistics.mean(times[1:] or times)


def final_losses(train_dir: str) -> Dict[str, float]:
    """Every loss term mmengine logged (``loss``, ``decode.loss_ce``, DA-VPT's
    ``loss_metric_*``, ...), averaged over the logged iterations of the second half of training."""
    from mmseg_prompt.utils.run_records import train_scalars
    records = [r for r in train_scalars(train_dir) if 'loss' in r]
    records = records[len(records) // 2:]
    keys = sorted({k for r in records for k in r if 'loss' in k})
    return {k: round(statistics.mean(r[k] for r in records if k in r), 5) for k in keys}


def config_sha256(cfg) -> str:
    """sha256 of a resolved config's content (every key, inherited ones included, but the arm's
    label and order), as sorted JSON."""
    content = {k: v for k, v in cfg.to_dict().items() if k not in (LABEL_KEY, ORDER_KEY)}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=repr).encode()).hexdigest()


def arm_facts(cfg, overrides: Dict[str, object]) -> dict:
    """What the loaded config ``cfg``, with the run's ``--cfg-options`` (merged into it), trains:
    trainable parameters of the segmentor it builds (prompts, deltas and head), iterations and
    batch size."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg.merge_from_dict(overrides)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    return dict(trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                iters=cfg.train_cfg.max_iters, batch_size=cfg.train_dataloader.batch_size)


# label-file id -> BGR colour of the side-by-side overlays: the four hue-pair classes, then grey
# for any other of the head's 150 classes
CLASS_COLOURS = {1: (60, 60, 230), 2: (40, 200, 60), 3: (230, 120, 40), 4: (40, 210, 230)}


def side_by_side(work: str, data_root: str, arms: Dict[str, str], count: int, trunk: str,
                 seed: int) -> List[str]:
    """For the first ``count`` validation images: one PNG each, ``[image | ground truth | one
    prediction per arm]`` (``arms``: name -> label; ``trunk`` and ``seed``, single-scale, from
    ``tools/test.py --out``), 3x enlarged, each panel captioned. Returns the paths written."""
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
        for arm, label in arms.items():
            pred = glob.glob(osp.join(work, arm, trunk, f'seed{seed}', 'pred', stem + '.png'))
            panels.append(paint(cv2.imread(sorted(pred)[0], cv2.IMREAD_GRAYSCALE)))
            captions.append(label.split(' (')[0].split(',')[0])
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


def std(values: List[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def per_trunk(runs: List[dict], key: str = 'miou_ss') -> Dict[str, float]:
    """trunk -> mean of ``key`` over that trunk's seeds."""
    trunks: Dict[str, List[float]] = {}
    for r in runs:
        trunks.setdefault(r['trunk'], []).append(r[key])
    return {t: statistics.mean(v) for t, v in trunks.items()}


def paired_gains(results: dict, arm: str, key: str = 'miou_ss') -> List[float]:
    """mIoU of ``arm`` minus head-only's on the same trunk and training seed, for every run."""
    base = {(r['trunk'], r['seed']): r[key] for r in results[BASELINE]['runs']}
    return [r[key] - base[(r['trunk'], r['seed'])] for r in results[arm]['runs']
            if (r['trunk'], r['seed']) in base]


def table(results: dict, tta: bool) -> str:
    """One row per arm: mIoU mean ± std over every (trunk, seed) run, the std across trunks (of
    the per-trunk means), the paired gain over head-only (mean ± std, and its smallest value),
    trainable parameters, step time and peak memory."""
    head = '| method | trainable params | mIoU single-scale | std across trunks |'
    rule = '|---|---:|---:|---:|'
    if tta:
        head += ' mIoU multi-scale + flip |'
        rule += '---:|'
    head += ' gain over head-only (smallest) | train step (ms) | peak memory (MiB) |'
    rule += '---:|---:|---:|'
    rows = [head, rule]
    for arm, r in results.items():
        runs = r['runs']
        row = (f'| {r["label"]} | {r["trainable_params"]:,} | '
               f'{mean_std([x["miou_ss"] for x in runs])} | '
               f'{std(list(per_trunk(runs).values())):.2f} |')
        if tta:
            row += f' {mean_std([x["miou_tta"] for x in runs])} |'
        gains = paired_gains(results, arm) if arm != BASELINE and BASELINE in results else []
        row += f' {mean_std(gains)} ({min(gains):+.2f}) |' if gains else ' - |'
        row += (f' {statistics.mean(x["step_s"] for x in runs) * 1000:.0f} | '
                f'{max(x["peak_rss_mib"] for x in runs)} |')
        rows.append(row)
    return '\n'.join(rows)


def trunk_table(results: dict, trunks: dict) -> str:
    """Single-scale mIoU of every arm on every trunk (mean over its training seeds), with each
    trunk's held-out pretraining accuracy and the first bytes of its sha256."""
    names = list(trunks)
    rows = ['| method | ' + ' | '.join(names) + ' |', '|---|' + '---:|' * len(names)]
    rows.append('| trunk: patch accuracy | ' + ' | '.join(
        f'{trunks[t]["accuracy"]["all"]:.3f}' for t in names) + ' |')
    rows.append('| trunk: sha256 | ' + ' | '.join(
        f'`{trunks[t]["sha256"][:8]}`' for t in names) + ' |')
    for arm, r in results.items():
        means = per_trunk(r['runs'])
        rows.append(f'| {r["label"]} | ' + ' | '.join(
            f'{means[t]:.2f}' if t in means else '-' for t in names) + ' |')
    return '\n'.join(rows)


def plot(results: dict, path: str) -> None:
    """mIoU (single-scale and multi-scale + flip, mean +- std over trunks x seeds) against
    trainable parameters, one labelled point per arm."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(results.values()):
        colour = f'C{i}'
        for key, marker in (('miou_ss', 'o'), ('miou_tta', 's')):
            vals = [x[key] for x in r['runs'] if key in x]
            if not vals:
                continue
            ax.errorbar(r['trainable_params'], statistics.mean(vals), yerr=std(vals),
                        fmt=marker, color=colour, capsize=4,
                        mfc='white' if key == 'miou_tta' else colour,
                        label=r['label'] if key == 'miou_ss' else None)
    ax.set_xlabel('trainable parameters (head, prompts, bias deltas)')
    ax.set_ylabel('mIoU (%)')
    ax.set_title('tiny pretrained ViTs, hue-pairs task, mean ± std over trunks x seeds:\n'
                 'filled = single-scale, open = multi-scale + flip', fontsize=9)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:,.0f}'))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def schedule_overrides(iters: int) -> Dict[str, object]:
    """--cfg-options that shrink the schedule to ``iters`` iterations (warm-up 5%)."""
    warmup = max(1, iters // 20)
    return {'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters,
            'default_hooks.checkpoint.interval': iters, 'param_scheduler.0.end': warmup,
            'param_scheduler.1.begin': warmup, 'param_scheduler.1.end': iters}


def run_options(args: argparse.Namespace, arm: Arm, cfg_sha: str, overrides: Dict[str, object],
                info: dict, env: dict) -> dict:
    """What determines a run's results, kept in its ``options.json``: the arm's config (file and
    resolved content), the ``--cfg-options`` (trunk file, data, seed, schedule), the trunk's
    sha256, its kernel set, the thread count and the data."""
    return dict(config=osp.relpath(arm.config, REPO), config_sha256=cfg_sha,
                cfg_options={k: str(v) for k, v in overrides.items()},
                trunk_sha256=info['sha256'], cpu_capability=info['requested_capability'],
                omp_num_threads=env.get('OMP_NUM_THREADS'),
                data=dict(num_train=args.num_train, num_val=args.num_val, seed=DATA_SEED))


def reuse_or_clear(run_dir: str, options: dict) -> None:
    """Keep ``run_dir``'s stage outputs if its ``options.json`` holds ``options``; else empty it
    (saying which options differ) and record ``options`` there."""
    from mmseg_prompt.utils.finished_stages import write_json
    path = osp.join(run_dir, 'options.json')
    earlier = None
    if osp.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
    if earlier == options:
        return
    if osp.isdir(run_dir):
        changed = sorted(k for k in options if earlier is None or earlier.get(k) != options[k])
        why = 'has no options.json' if earlier is None else f'had other {", ".join(changed)}'
        print(f'  the earlier run in {run_dir} {why}: starting afresh', flush=True)
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    write_json(path, options, indent=1)


def run_arm(args: argparse.Namespace, arm: Arm, cfg_sha: str, max_iters: int, trunk: str,
            info: dict, seed: int, data_root: str, work: str, env: dict) -> dict:
    """Train ``arm`` on ``trunk`` at ``seed`` with tools/train.py, test it with tools/test.py
    (single-scale, and --tta unless --no-tta), under the trunk's kernel set; returns the run.
    Each stage done by an earlier run with the same options is skipped, and an interrupted
    training resumes from its last checkpoint (mmseg_prompt/utils/finished_stages.py)."""
    from mmseg_prompt.utils.finished_stages import finished_test, training_state, write_json
    overrides = {'model.backbone.pretrained': info['path'],
                 'train_dataloader.dataset.data_root': data_root,
                 'val_dataloader.dataset.data_root': data_root,
                 'test_dataloader.dataset.data_root': data_root,
                 'randomness.seed': seed}
    if info['requested_capability'] == PINNED:
        overrides['randomness.deterministic'] = True
    if args.iters:
        overrides.update(schedule_overrides(args.iters))
    options = ['--cfg-options'] + [f'{k}={v}' for k, v in overrides.items()]
    run_dir = osp.join(work, arm.name, trunk, f'seed{seed}')
    env = capability_env(env, info['requested_capability'])
    train_dir = osp.join(run_dir, 'train')
    train_record = osp.join(run_dir, 'train.json')  # the training process's peak memory
    pred_dir = osp.join(run_dir, 'pred')
    pred = ['--out', pred_dir] if (trunk, seed) == overlay_run(args) else []
    # each test's extra options (after tools/test.py CONFIG CHECKPOINT), in the order run
    tests = {'test_ss': ['--work-dir', osp.join(run_dir, 'test_ss')] + pred}
    if not args.no_tta:
        tests['test_tta'] = ['--tta', '--work-dir', osp.join(run_dir, 'test_tta')]

    reuse_or_clear(run_dir, run_options(args, arm, cfg_sha, overrides, info, env))
    state = training_state(train_dir, max_iters)
    trained = state.finished and osp.isfile(train_record)
    tested = {name: finished_test(osp.join(run_dir, name)) is not None
              and (name != 'test_ss' or not pred or osp.isdir(pred_dir)) for name in tests}
    done = trained and all(tested.values())
    print(f'{arm.label}, trunk {trunk}, seed {seed}'
          + (f': finished earlier, its results reused ({run_dir})' if done else ''), flush=True)
    t_run = time.time()
    if trained:
        with open(train_record) as f:
            rss = json.load(f)['peak_rss_mib']
        if not done:
            print(f'  trained earlier: {state.checkpoint} is there', flush=True)
    else:
        resume = ['--resume'] if state.resume else []
        if state.resume:
            print(f'  resuming the interrupted training in {train_dir}', flush=True)
        elif osp.isdir(train_dir):  # stopped before its record or its first checkpoint
            shutil.rmtree(train_dir)
        rss = run_tool([osp.join(REPO, 'tools', 'train.py'), arm.config, '--work-dir',
                        train_dir] + resume + options, osp.join(run_dir, 'train.log'), env,
                       info['requested_capability'])
        if not osp.isfile(state.checkpoint):
            sys.exit(f'ERROR: training of {arm.config} ended without {state.checkpoint}: its '
                     f'checkpoint hook must save the last iteration '
                     f'(default_hooks.checkpoint.interval)')
        write_json(train_record, dict(peak_rss_mib=rss))
    test = [osp.join(REPO, 'tools', 'test.py'), arm.config, state.checkpoint]
    for name, extra in tests.items():
        if tested[name]:
            if not done:
                print(f'  tested earlier: {osp.join(run_dir, name)}', flush=True)
            continue
        run_tool(test + extra + options, osp.join(run_dir, f'{name}.log'), env,
                 info['requested_capability'])
    run = dict(trunk=trunk, seed=seed, miou_ss=read_miou(osp.join(run_dir, 'test_ss')),
               step_s=step_time(train_dir), peak_rss_mib=rss, checkpoint=state.checkpoint,
               losses=final_losses(train_dir))
    if not args.no_tta:
        run['miou_tta'] = read_miou(osp.join(run_dir, 'test_tta'))
    print(f'  mIoU {run["miou_ss"]:.2f}'
          + (f' (--tta {run["miou_tta"]:.2f})' if 'miou_tta' in run else '')
          + f', {time.time() - t_run:.0f} s', flush=True)
    return run


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
        for name, r in out['arms'].items():  # results.json of an earlier version: no label
            r.setdefault('label', args.known_arms[name].label if name in args.known_arms
                         else name)
        missing = [a for a in [BASELINE] + args.margin_arms if a not in out['arms']]
        if args.min_margin is not None and missing:
            sys.exit(f'ERROR: {path} has no results of {missing}, which --min-margin compares')
        report(out, work, args)
        return out
    from mmengine.config import Config

    from mmseg_prompt.testing.shape_tasks import make_hue_pairs_ade20k
    from mmseg_prompt.utils.finished_stages import write_json

    os.makedirs(osp.join(work, 'trunks'), exist_ok=True)
    env = dict(os.environ)
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    trunks = {}
    if PINNED in args.cpu_capabilities and not pins_apply():
        print(f'the kernel set {PINNED}: this machine is {platform.machine()}, not x86-64, so '
              f'its results are its own: only the threads ({PINNED_THREADS}) and torch\'s '
              f'deterministic algorithms are pinned here', flush=True)
    print(f'[1/3] the pretrained tiny trunks: seeds {args.trunk_seeds} x kernel sets '
          f'{args.cpu_capabilities}', flush=True)
    for capability in args.cpu_capabilities:
        for seed in args.trunk_seeds:
            name = trunk_name(capability, seed)
            print(f'  trunk {name}', flush=True)
            trunks[name] = pretrain_trunk(args, capability, seed, env,
                                          osp.join(work, 'trunks', f'{name}.log'))
    data_root = make_hue_pairs_ade20k(osp.join(work, 'data', 'hue_pairs'), args.num_train,
                                      args.num_val, seed=DATA_SEED)
    print(f'[2/3] the hue-pairs task in ADE20K layout: {args.num_train} training and '
          f'{args.num_val} validation images in {data_root}', flush=True)

    # every arm's config, resolved: its content keys the runs, its model gives the parameters
    overrides = {'model.backbone.pretrained': next(iter(trunks.values()))['path'],
                 **(schedule_overrides(args.iters) if args.iters else {})}
    results, digests, max_iters, facts = {}, {}, {}, {}
    for arm in args.arms.values():
        cfg = Config.fromfile(arm.config)
        digests[arm.name] = config_sha256(cfg)
        facts = arm_facts(cfg, overrides)
        max_iters[arm.name] = facts['iters']
        results[arm.name] = dict(label=arm.label, config=osp.relpath(arm.config, REPO),
                                 trainable_params=facts['trainable_params'], runs=[])
    n_runs = len(args.arms) * len(trunks) * len(args.seeds)
    print(f'[3/3] {n_runs} runs: trunks {list(trunks)} x arms {list(args.arms)} x seeds '
          f'{args.seeds}', flush=True)
    for trunk, info in trunks.items():
        for arm in args.arms.values():
            for seed in args.seeds:
                results[arm.name]['runs'].append(run_arm(
                    args, arm, digests[arm.name], max_iters[arm.name], trunk, info, seed,
                    data_root, work, env))

    if args.overlays:
        shown = side_by_side(work, data_root, {a.name: a.label for a in args.arms.values()},
                             args.overlays, *overlay_run(args))
        print(f'overlays (image, ground truth, then each arm\'s prediction): {len(shown)} PNG '
              f'in {osp.join(work, "overlays")}', flush=True)
    out = dict(arms=results, trunks=trunks, seeds=args.seeds, trunk_seeds=args.trunk_seeds,
               cpu_capabilities=args.cpu_capabilities, iters=facts['iters'],
               batch_size=facts['batch_size'], num_train=args.num_train, num_val=args.num_val,
               tta=not args.no_tta, seconds=round(time.time() - t0, 1))
    write_json(osp.join(work, 'results.json'), out, indent=1)
    report(out, work, args)
    return out


def report(out: dict, work: str, args: argparse.Namespace) -> None:
    """Print and write the tables (``results.md``), plot them, and apply ``--min-margin``."""
    from mmseg_prompt.utils.atomic_checkpoint import write_atomically
    results = out['arms']
    text = table(results, tta=out['tta'])
    trunks = out['trunks']
    recipe = next(iter(trunks.values()))['recipe']
    n_runs = len(next(iter(results.values()))['runs'])
    summary = (f'{len(trunks)} tiny ViTs pretrained on shapes ({recipe["steps"]} steps; '
               f'pretraining seeds {out["trunk_seeds"]} x kernel sets '
               f'{out["cpu_capabilities"]}), hue-pairs task ({out["num_train"]} training, '
               f'{out["num_val"]} validation images), {out["iters"]} iterations of batch '
               f'{out["batch_size"]}, training seeds {out["seeds"]}; mIoU (%) mean ± std over '
               f'the {n_runs} (trunk, seed) runs of each arm; gains are paired: the arm minus '
               f'head-only on the same trunk and seed')
    per_trunk_text = trunk_table(results, trunks)
    print(f'\n{summary}\n\n{text}\n\nsingle-scale mIoU per trunk (mean over training seeds):'
          f'\n\n{per_trunk_text}\n', flush=True)
    markdown = (f'{summary}\n\n{text}\n\nSingle-scale mIoU per trunk (mean over training '
                f'seeds):\n\n{per_trunk_text}\n')
    write_atomically(osp.join(work, 'results.md'), lambda f: f.write(markdown.encode()))
    if not args.no_plot:
        plot(results, osp.join(work, 'miou_vs_params.png'))
        print(f'plot: {osp.join(work, "miou_vs_params.png")}')
    print(f'results: {osp.join(work, "results.json")}; {out["seconds"]:.0f} s in all')
    if args.min_margin is None:
        return
    short = []
    for arm in args.margin_arms:
        gain = statistics.mean(paired_gains(results, arm))
        print(f'{results[arm]["label"]} - head-only: {gain:+.2f} mIoU (required: at least '
              f'{args.min_margin:+.2f})')
        if gain < args.min_margin:
            short.append(results[arm]['label'])
    if short:
        sys.exit(f'ERROR: {", ".join(short)} did not beat head-only by {args.min_margin} mIoU '
                 f'points (single-scale, mean of the paired gains over trunks '
                 f'{list(trunks)} and seeds {out["seeds"]})')


if __name__ == '__main__':
    main()
