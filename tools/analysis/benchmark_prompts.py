"""Cost of prompt tuning: training step, inference, peak memory and FLOPs per prompt count.

    python tools/analysis/benchmark_prompts.py [--cases FILE] [--methods trunk vpt cvpt]
        [--model vit_base_patch16_224] [--img 224] [--batch 8] [--prompts 1 10 50 100 200]
        [--head none|upernet] [--device cpu|cuda] [--dtype fp32|bf16] [--warmup 2] [--repeats 5]
        [--rounds 1] [--out DIR]

The cases are backbone configs over FrozenViT in a case file (``--cases``, default
``benchmark_cases.py`` beside this tool: the frozen trunk, then VPT-Deep and CVPT at each
``--prompts`` count; LoRA and AdaptFormer on request), built from mmseg's registry
(``mmseg_prompt/tooling/benchmark/cases.py``; docs/cost.md, "Cases"). Every case runs in a fresh
process, so its peak memory is its own: the CUDA allocator's peak on GPU, the process's peak RSS
on CPU. Times are medians over ``--repeats`` after ``--warmup`` untimed runs; with ``--rounds R``
the whole sweep runs R times, cases interleaved, and each case reports the median of its R rounds
(so a slow minute of a shared machine does not land on one case only). A training step is
forward, backward and an AdamW step on the tuned parameters (prompts, and the head with
``--head upernet``); the loss is the mean square of the outputs, or UperNet's cross-entropy on
random labels. FLOPs are multiply-adds counted once (fvcore's and mmengine's convention): the
inference forward from mmengine's FlopAnalyzer, given a handle for ``scaled_dot_product_attention``,
which it does not count by itself; the training step (forward and backward, as it runs, dropout
included) from torch's ``FlopCounterMode``, given formulas for the CPU flash-attention kernels,
which it does not count by itself. Prints a markdown table, the ratios the cost targets name and
a linear fit of CVPT's cost in the prompt count; writes ``results.json`` and a plot of cost
against prompt count to ``--out``. The work is done by ``mmseg_prompt/tooling/benchmark/``
(cases, timing, operator counts, report) and ``mmseg_prompt/tooling/flops.py``; this is the
command line. Weights are random: costs do not depend on them, and nothing is downloaded.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
DEFAULT_CASES = osp.join(HERE, 'benchmark_cases.py')
# the flags a case's `flags` may route into its backbone options (docs/cost.md, "Cases")
PART_FLAGS = ('prompt_dropout', 'cross_proj_drop', 'fold')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='vit_base_patch16_224')
    p.add_argument('--img', type=int, default=224)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--cases', default=DEFAULT_CASES, metavar='FILE',
                   help='the case file (an mmengine config; docs/cost.md, "Cases"); default: '
                   'benchmark_cases.py beside this tool')
    p.add_argument('--methods', nargs='+', default=None, metavar='METHOD',
                   help="the cases to run, by their `method` in --cases (default: the file's "
                   'default ones: trunk vpt cvpt)')
    p.add_argument('--prompts', nargs='+', type=int, default=[1, 10, 50, 100, 200],
                   help="the prompt counts of the cases with a `sweep` (each goes into the "
                   "case's swept key)")
    p.add_argument('--head', choices=['none', 'upernet'], default='none')
    p.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    p.add_argument('--dtype', choices=['fp32', 'bf16'], default=None,
                   help='default: bf16 on CUDA, fp32 on CPU')
    p.add_argument('--prompt-dropout', type=float, default=0.1,
                   help='prompt dropout, as the configs (0.1), where a case routes it; with '
                   'dropout CVPT folds per sample')
    p.add_argument('--cross-proj-drop', type=float, default=0.1,
                   help="CVPT's dropout on the cross-attention output, as the configs (0.1), "
                   'where a case routes it')
    p.add_argument('--fold', default='auto', choices=['auto', 'always', 'never'],
                   help="CVPT's cross-attention form, where a case routes it")
    p.add_argument('--with-cp', action='store_true', help='activation checkpointing')
    p.add_argument('--trunk-dtype', default='float32', choices=['float32', 'bfloat16'],
                   help="the backbone's trunk_dtype: the dtype the frozen trunk is stored in")
    p.add_argument('--compile', action='store_true',
                   help='torch.compile the backbone, neck and heads (nn.Module.compile, default '
                   'inductor); the warm-up runs absorb the compilation')
    p.add_argument('--compile-backend', default='inductor',
                   help='torch.compile backend for --compile')
    p.add_argument('--no-flops', action='store_true',
                   help='skip the FLOP counts (they do not change with --compile)')
    p.add_argument('--profile', action='store_true',
                   help='also write a torch.profiler table of one training step per case '
                   '(profile_<method>_<M>.txt in --out)')
    p.add_argument('--model-kwargs', nargs='+', default=[], metavar='KEY=INT',
                   help='timm model arguments, e.g. depth=4 embed_dim=256 num_heads=4')
    p.add_argument('--count-ops', action='store_true',
                   help='count the kernel-launching operators of one training step (forward '
                        'and backward) and one inference per method instead of timing them, '
                        'on the CPU, with the cross-attention form --device would run '
                        '(docs/cost.md, "Kernel launches")')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--rounds', type=int, default=1,
                   help='run the sweep this many times, cases interleaved; report medians')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--out', default=osp.join('work_dirs', 'benchmark_prompts'),
                   help='output folder (default: work_dirs/benchmark_prompts of the current one)')
    p.add_argument('--report', metavar='RESULTS_JSON', nargs='+',
                   help='print the table and ratios of a saved results.json and redraw its plot; '
                   'with two (eager, then --compile), also the speed-up of each case; the '
                   'methods are named and compared as --cases says')
    p.add_argument('--case', help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args(argv)
    args.cases = osp.abspath(args.cases)
    args.dtype = args.dtype or ('bf16' if args.device == 'cuda' else 'fp32')
    args.no_flops = args.no_flops or args.compile  # the same as eager's; not counted twice
    return args


def _cuda():
    import torch
    return torch.cuda.is_available()


def _threads():
    import torch
    return torch.get_num_threads()


def load(args):
    """The case file of ``--cases``, its cases ``--methods`` selects, expanded over
    ``--prompts``."""
    from mmseg_prompt.tooling.benchmark.cases import expand, load_cases
    cases = load_cases(args.cases, PART_FLAGS)
    try:
        selected = cases.select(args.methods)
    except KeyError as e:
        sys.exit(f'--methods: {e.args[0]}')
    return cases, expand(selected, args.prompts)


def run_in_fresh_process(case):
    """Run ``case`` (timed, or with ``--count-ops`` counted) in a fresh process: its row."""
    cmd = [sys.executable, osp.abspath(__file__), '--case',
           f'{case.spec.method}:{case.prompts}'] + sys.argv[1:]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f'case {case.spec.method} {case.prompts} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_all(args):
    """Every case in a fresh process, ``--rounds`` times interleaved; the report."""
    from mmseg_prompt.tooling.benchmark import report
    cases, todo = load(args)
    os.makedirs(args.out, exist_ok=True)
    per_case = [(case, []) for case in todo]  # each case's rows, one per round
    for r in range(args.rounds):
        if args.rounds > 1:
            print(f'round {r + 1}/{args.rounds}', flush=True)
        for case, rows in per_case:
            t0 = time.time()
            res = run_in_fresh_process(case)
            rows.append(res)
            print(f'  {case.spec.method:5s} M={case.prompts:<4d} train '
                  f'{res.get("train_s", float("nan")):7.3f} s  '
                  f'infer {res["infer_s"]:7.3f} s  peak {res["peak_mib"]:8.0f} MiB  '
                  f'{res.get("gflops", float("nan")):8.1f} GFLOPs  ({time.time() - t0:.0f} s)',
                  flush=True)
    results = [report.merge_rounds(rows) for _, rows in per_case]
    meta = dict(model=args.model, img=args.img, batch=args.batch, device=args.device,
                dtype=args.dtype, head=args.head, prompt_dropout=args.prompt_dropout,
                cross_proj_drop=args.cross_proj_drop,
                fold=args.fold, with_cp=args.with_cp,
                compile=args.compile and args.compile_backend,
                warmup=args.warmup, repeats=args.repeats,
                rounds=args.rounds, threads=args.threads or _threads())
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    print(report.table(meta, results, cases))
    print(report.summary(results, cases))
    report.plot(meta, results, osp.join(args.out, 'cost_vs_prompts.png'), cases)
    print(f'\nwrote {osp.join(args.out, "results.json")} and cost_vs_prompts.png')
    return results


def count_all(args):
    """``--count-ops``: every case in a fresh process; prints the table, writes ops.json."""
    from mmseg_prompt.tooling.benchmark import report
    from mmseg_prompt.tooling.benchmark.cases import model_kwargs
    cases, todo = load(args)
    os.makedirs(args.out, exist_ok=True)
    results = [run_in_fresh_process(case) for case in todo]
    meta = dict(model=args.model, model_kwargs=model_kwargs(args.model_kwargs), img=args.img,
                batch=args.batch, dtype=args.dtype, prompt_dropout=args.prompt_dropout,
                cross_proj_drop=args.cross_proj_drop, fold=args.fold, device=args.device,
                trunk_dtype=args.trunk_dtype)
    with open(osp.join(args.out, 'ops.json'), 'w') as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    print(report.op_table(meta, results, cases))
    print(f'\nwrote {osp.join(args.out, "ops.json")}')
    return results


def report_saved(args):
    """``--report``: the table, ratios and plot of each saved run; of two, the speed-ups."""
    from mmseg_prompt.tooling.benchmark import report
    from mmseg_prompt.tooling.benchmark.cases import load_cases
    cases = load_cases(args.cases, PART_FLAGS)
    runs = []
    for path in args.report:
        with open(path) as f:
            runs.append(json.load(f))
        meta, results = runs[-1]['meta'], runs[-1]['results']
        print(report.table(meta, results, cases))
        print(report.summary(results, cases))
        report.plot(meta, results, osp.join(osp.dirname(path), 'cost_vs_prompts.png'), cases)
    if len(runs) == 2:
        print(report.compare(*runs, cases))


def main(argv=None):
    args = parse_args(argv)
    if args.case:
        from mmseg_prompt.tooling.benchmark.cases import Case, load_cases
        cases = load_cases(args.cases, PART_FLAGS)
        method, m = args.case.split(':')
        case = Case(cases.spec(method), int(m))
        if args.count_ops:
            from mmseg_prompt.tooling.benchmark.op_counts import count_case_ops as run
        else:
            from mmseg_prompt.tooling.benchmark.timing import run_case as run
        print(json.dumps(run(args, case, args.cases)))
        return
    if args.count_ops:
        count_all(args)
    elif args.report:
        report_saved(args)
    else:
        run_all(args)


if __name__ == '__main__':
    main()
