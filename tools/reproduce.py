"""Reproduce the papers' tables: train, test single- and multi-scale, write the results.

    python tools/reproduce.py --table cvpt_ade20k --gpus 8
    python tools/reproduce.py --table davpt_ade20k --launcher slurm --partition P --gpus 16
    python tools/reproduce.py CONFIG [CONFIG ...] --launcher none [--cfg-options ...]

For each config: train (tools/train.py; tools/dist_train.sh with --gpus under the default
`pytorch` launcher; tools/slurm_train.sh under `slurm`), then the single-scale test and the
multi-scale + flip test in the papers' 0.x style (tools/test.py --tta --tta-style 0.x). Every
stage that is done is skipped, and an interrupted training resumes from its last checkpoint, so
a cluster job can simply be submitted again. A training stopped by the cluster's signal saves a
checkpoint and exits with status 75 (mmseg_prompt/engine/stop_signal.py); so does this tool,
which outlives the stage on that signal, and the same command resumes. Writes, in --work-dir:

- results.json: per config its checkpoint, each mIoU, the paper's numbers, time, peak memory;
- results.md: the same as a table, paper beside ours;
- metafile.yml: an mmseg-style model index (Collections / Models / Results).

The named tables map the papers' rows to configs/paper_protocol/ (docs/methods.md, "The papers'
protocol").
"""
import argparse
import json
import os
import os.path as osp
import shlex
import signal
import sys
import time
from typing import Dict, List, NamedTuple, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAPER = osp.join('configs', 'paper_protocol')


class PaperRow(NamedTuple):
    config: str  # relative to the repository
    method: str
    single_scale: Optional[float] = None  # the paper's mIoU, None where it reports none
    multi_scale: Optional[float] = None
    unstated_scale: Optional[float] = None  # a reported mIoU whose test scale we do not know
    source: str = ''  # where the paper's numbers are


_CVPT = 'CVPT (ICCV 2025), ADE20K with SETR-PUP'
_VPT_BITFIT = 'VPT (ECCV 2022), its ADE20K table (ViT-L/16 ImageNet-21k, SETR-PUP), the bias ' \
    'tuning (BitFit) row: VPT\'s own run, beside CVPT\'s baseline, whose VPT-Deep numbers ' \
    '(42.11 / 44.06) are that table\'s too'
_DAVPT = 'DA-VPT (CVPR 2025), Table 2 (whether single- or multi-scale is not stated where we ' \
    'read it: docs/methods.md)'
TABLES: Dict[str, List[PaperRow]] = {
    'cvpt_ade20k': [
        PaperRow(f'{PAPER}/vpt10_cvpt_protocol_setrpup_ade20k.py', 'VPT-Deep', 42.11, 44.06,
                 source=_CVPT),
        PaperRow(f'{PAPER}/cvpt10_setrpup_ade20k.py', 'CVPT, 10 prompts', source=_CVPT),
        PaperRow(f'{PAPER}/cvpt200_setrpup_ade20k.py', 'CVPT, 200 prompts', 45.66, 47.92,
                 source=_CVPT),
        PaperRow(f'{PAPER}/bitfit_cvpt_protocol_setrpup_ade20k.py', 'BitFit', 43.40, 45.33,
                 source=_VPT_BITFIT),
    ],
    'davpt_ade20k': [
        PaperRow(f'{PAPER}/vpt20_davpt_protocol_setrpup_ade20k.py', 'VPT-Deep',
                 unstated_scale=44.08, source=_DAVPT),
        PaperRow(f'{PAPER}/davpt_setrpup_ade20k.py', 'DA-VPT', source=_DAVPT),
        PaperRow(f'{PAPER}/davpt_plus_setrpup_ade20k.py', 'DA-VPT+', unstated_scale=46.47,
                 source=_DAVPT),
    ],
    'davpt_pascal_context': [
        PaperRow(f'{PAPER}/vpt20_davpt_protocol_setrpup_pascal_context.py', 'VPT-Deep',
                 unstated_scale=49.51, source=_DAVPT),
        PaperRow(f'{PAPER}/davpt_setrpup_pascal_context.py', 'DA-VPT', source=_DAVPT),
        PaperRow(f'{PAPER}/davpt_plus_setrpup_pascal_context.py', 'DA-VPT+',
                 unstated_scale=50.40, source=_DAVPT),
    ],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('configs', nargs='*', help='configs to run (instead of --table)')
    p.add_argument('--table', help='a paper table: ' + ', '.join(sorted(TABLES)))
    p.add_argument('--work-dir', default=osp.join('work_dirs', 'reproduce'),
                   help='where the runs of each config and the result files go (default: '
                        'work_dirs/reproduce of the working directory, as mmseg\'s tools)')
    p.add_argument('--launcher', choices=['pytorch', 'slurm', 'none'], default='pytorch',
                   help='pytorch: tools/dist_train.sh / dist_test.sh on this node with --gpus '
                        'processes; slurm: tools/slurm_*.sh; none: one process')
    p.add_argument('--gpus', type=int, default=8, help='GPUs (processes) per training')
    p.add_argument('--partition', help='slurm partition (--launcher slurm)')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='key=value overrides passed to every train and test')
    args = p.parse_args(argv)
    if bool(args.configs) == bool(args.table):
        p.error('give either configs or --table')
    if args.table and args.table not in TABLES:
        p.error(f'--table {args.table!r}: one of {", ".join(sorted(TABLES))}')
    if args.launcher == 'slurm' and not args.partition:
        p.error('--launcher slurm needs --partition')
    return args


def rows_of(args) -> List[PaperRow]:
    """The rows to run, their configs as absolute paths (a table's are in the repository,
    given configs relative to the working directory); a given config of a table keeps that
    table's paper numbers."""
    if args.table:
        return [r._replace(config=osp.join(REPO, r.config)) for r in TABLES[args.table]]
    rows = []
    for config in map(osp.abspath, args.configs):
        known = [r for t in TABLES.values() for r in t if osp.join(REPO, r.config) == config]
        rows.append(known[0]._replace(config=config) if known else
                    PaperRow(config, osp.splitext(osp.basename(config))[0]))
    return rows


def tool_command(args, stage: str, config: str, extra: List[str]) -> List[str]:
    """The command of ``stage`` ('train' or 'test') under the chosen launcher."""
    tool = osp.join(REPO, 'tools', f'{stage}.py')
    if args.launcher == 'none':
        return [sys.executable, tool, config] + extra
    if args.launcher == 'pytorch':  # dist_train.sh CONFIG GPUS ...; dist_test.sh CONFIG CKPT GPUS
        head = [] if stage == 'train' else extra[:1]
        rest = extra if stage == 'train' else extra[1:]
        return ['bash', osp.join(REPO, 'tools', f'dist_{stage}.sh'), config] + head + \
            [str(args.gpus)] + rest
    name = f'{stage}_{osp.splitext(osp.basename(config))[0]}'
    return ['bash', osp.join(REPO, 'tools', f'slurm_{stage}.sh'), args.partition, name, config] \
        + extra


def run_stage(args, cmd: List[str], log_path: str) -> float:
    """Run ``cmd`` with its output in ``log_path`` (and its progress lines here); returns the
    wall time. Exits with the log's tail if it fails; with status 75 if it was stopped by a
    signal after its checkpoint (the training's StopSignalHook), or if this process got
    SIGTERM meanwhile: a cluster signals every process of the job, and this one waits for the
    stage to save instead of ending first."""
    from mmseg_prompt.engine.stop_signal import STOPPED_EXIT_CODE
    from mmseg_prompt.utils.logged_run import run_logged
    print('  $ ' + ' '.join(shlex.quote(c) for c in cmd), flush=True)
    env = dict(os.environ, GPUS=str(args.gpus))
    exits, received = [], []

    def error(rc):
        exits.append(rc)
        return f'ERROR: {cmd[0]} {" ".join(cmd[1:3])} ... failed (exit {rc}); log: {log_path}\n'
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        done = run_logged(cmd, log_path, cwd=REPO, env=env, error=error,
                          echo=lambda line: line.strip() if 'Iter(' in line or 'mIoU' in line
                          else None)
    except SystemExit:
        if exits != [STOPPED_EXIT_CODE]:
            raise
        done = None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if done is None or received:
        what = 'stopped by a signal after saving a checkpoint' if done is None else \
            'done, and this job got SIGTERM'
        print(f'  {cmd[0]} {" ".join(cmd[1:3])} ... {what}: submit the same command again to '
              f'go on (a stopped training resumes from its checkpoint); log: {log_path}',
              file=sys.stderr, flush=True)
        sys.exit(STOPPED_EXIT_CODE)
    return done.seconds


def train(args, row: PaperRow, run_dir: str, record: dict) -> str:
    """Train unless the final checkpoint is there; resume when a checkpoint of an interrupted
    run is. Returns the final checkpoint."""
    from mmengine.config import Config

    from mmseg_prompt.utils.finished_stages import training_state
    cfg = Config.fromfile(row.config)
    overrides = dict(o.split('=', 1) for o in args.cfg_options)
    max_iters = int(overrides.get('train_cfg.max_iters', cfg.train_cfg.max_iters))
    train_dir = osp.join(run_dir, 'train')
    state = training_state(train_dir, max_iters)
    ckpt = state.checkpoint
    if state.finished:
        print(f'  trained: {ckpt} is there', flush=True)
        return ckpt
    extra = ['--work-dir', train_dir]
    if state.resume:
        extra.append('--resume')
        print(f'  resuming the interrupted training in {train_dir}', flush=True)
    if args.cfg_options:
        extra += ['--cfg-options'] + args.cfg_options
    os.makedirs(train_dir, exist_ok=True)
    seconds = run_stage(args, tool_command(args, 'train', row.config, extra),
                        osp.join(run_dir, f'train_{time.strftime("%Y%m%d_%H%M%S")}.log'))
    record['train_seconds'] = round(record.get('train_seconds', 0.0) + seconds, 1)
    record['peak_memory_mib'] = peak_memory(train_dir)
    if not osp.isfile(ckpt):
        sys.exit(f'ERROR: training of {row.config} ended without {ckpt}: its checkpoint hook '
                 f'must save the last iteration (default_hooks.checkpoint.interval)')
    return ckpt


def peak_memory(train_dir: str) -> Optional[int]:
    """The largest GPU memory (MiB) mmengine logged while training; None on CPU."""
    from mmseg_prompt.utils.run_records import train_scalars
    memory = [r['memory'] for r in train_scalars(train_dir) if 'memory' in r]
    return max(memory) if memory else None


def test(args, row: PaperRow, run_dir: str, ckpt: str, style: str) -> float:
    """mIoU of the single-scale ('ss') or the 0.x multi-scale + flip ('ms') test, from the
    stage's earlier run if it finished."""
    from mmseg_prompt.utils.finished_stages import finished_test
    from mmseg_prompt.utils.run_records import test_metrics
    test_dir = osp.join(run_dir, f'test_{style}')
    done = finished_test(test_dir)
    if done is not None:
        return float(done['mIoU'])
    extra = [ckpt, '--work-dir', test_dir] + (['--tta', '--tta-style', '0.x']
                                              if style == 'ms' else [])
    if args.cfg_options:
        extra += ['--cfg-options'] + args.cfg_options
    run_stage(args, tool_command(args, 'test', row.config, extra),
              osp.join(run_dir, f'test_{style}.log'))
    return float(test_metrics(test_dir)['mIoU'])


def run_row(args, row: PaperRow) -> dict:
    from mmseg_prompt.utils.finished_stages import write_json
    name = osp.splitext(osp.basename(row.config))[0]
    run_dir = osp.join(args.work_dir, name)
    os.makedirs(run_dir, exist_ok=True)
    state_path = osp.join(run_dir, 'record.json')
    record = json.load(open(state_path)) if osp.isfile(state_path) else {}
    print(f'[{name}] {row.method}', flush=True)
    ckpt = train(args, row, run_dir, record)
    write_json(state_path, record)
    record.update(name=name, config=row.config, method=row.method, checkpoint=ckpt,
                  paper=dict(single_scale=row.single_scale, multi_scale=row.multi_scale,
                             unstated_scale=row.unstated_scale, source=row.source),
                  single_scale=test(args, row, run_dir, ckpt, 'ss'),
                  multi_scale=test(args, row, run_dir, ckpt, 'ms'))
    write_json(state_path, record)
    return record


def results_markdown(records: List[dict]) -> str:
    """The results as a table: ours beside the paper's, per test."""
    def num(v):
        return '-' if v is None else f'{v:.2f}'
    lines = ['| method | config | mIoU (ss) | paper (ss) | mIoU (ms+flip, 0.x) | paper (ms) | '
             'paper (scale not stated) | train time | peak memory (MiB) |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in records:
        seconds, paper = r.get('train_seconds'), r['paper']
        lines.append(
            f'| {r["method"]} | `{osp.relpath(r["config"], REPO)}` | {num(r["single_scale"])} '
            f'| {num(paper["single_scale"])} | {num(r["multi_scale"])} | '
            f'{num(paper["multi_scale"])} | {num(paper["unstated_scale"])} | '
            f'{"-" if seconds is None else f"{seconds / 3600:.2f} h"} | '
            f'{r.get("peak_memory_mib") or "-"} |')
    sources = sorted({r['paper']['source'] for r in records if r['paper']['source']})
    return '\n'.join(lines) + ''.join(f'\n\nPaper numbers: {s}.' for s in sources) + '\n'


def metafile(records: List[dict]) -> dict:
    """An mmseg-style model index of the runs: one collection, one model per config."""
    from mmengine.config import Config
    models = []
    for r in records:
        cfg = Config.fromfile(r['config'])
        dataset = cfg.train_dataloader.dataset.get('type', 'unknown').replace('Dataset', '')
        models.append({
            'Name': r['name'], 'In Collection': 'mmseg-prompt paper protocol',
            'Metadata': {'Method': r['method'],
                         'Batch Size': cfg.train_dataloader.batch_size,
                         'Iterations': cfg.train_cfg.max_iters,
                         'Memory (MiB)': r.get('peak_memory_mib')},
            'Results': [{'Task': 'Semantic Segmentation', 'Dataset': dataset,
                         'Metrics': {'mIoU': r['single_scale'],
                                     'mIoU(ms+flip)': r['multi_scale']}}],
            'Config': r['config'], 'Weights': r['checkpoint']})
    return {'Collections': [{'Name': 'mmseg-prompt paper protocol',
                             'Metadata': {'Training Data': sorted(
                                 {m['Results'][0]['Dataset'] for m in models})},
                             'README': 'README.md'}],
            'Models': models}


def main(argv=None):
    args = parse_args(argv)
    import yaml

    import mmseg_prompt  # noqa: F401
    os.makedirs(args.work_dir, exist_ok=True)
    from mmseg_prompt.utils.finished_stages import write_json
    records = [run_row(args, row) for row in rows_of(args)]
    write_json(osp.join(args.work_dir, 'results.json'), records)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(results_markdown(records))
    with open(osp.join(args.work_dir, 'metafile.yml'), 'w') as f:
        yaml.safe_dump(metafile(records), f, sort_keys=False)
    print(results_markdown(records))
    print(f'wrote results.json, results.md and metafile.yml in {args.work_dir}')


if __name__ == '__main__':
    main()
