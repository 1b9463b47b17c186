"""Cost of prompt tuning: training step, inference, peak memory and FLOPs per prompt count.

    python tools/analysis/benchmark_prompts.py [--model vit_base_patch16_224] [--img 224]
        [--batch 8] [--methods trunk vpt cvpt] [--prompts 1 10 50 100 200] [--head none|upernet]
        [--device cpu|cuda] [--dtype fp32|bf16] [--warmup 2] [--repeats 5] [--rounds 1] [--out DIR]

Every case (the frozen trunk alone, then VPT-Deep and CVPT at each prompt count) runs in a fresh
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
against prompt count to ``--out``.
Weights are random: costs do not depend on them, and nothing is downloaded.
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from functools import partial

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHOD_TYPES = dict(trunk='FrozenViT', vpt='VPTDeepViT', cvpt='CVPTViT')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='vit_base_patch16_224')
    p.add_argument('--img', type=int, default=224)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--methods', nargs='+', default=['trunk', 'vpt', 'cvpt'],
                   choices=list(METHOD_TYPES))
    p.add_argument('--prompts', nargs='+', type=int, default=[1, 10, 50, 100, 200])
    p.add_argument('--head', choices=['none', 'upernet'], default='none')
    p.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    p.add_argument('--dtype', choices=['fp32', 'bf16'], default=None,
                   help='default: bf16 on CUDA, fp32 on CPU')
    p.add_argument('--prompt-dropout', type=float, default=0.1,
                   help='as the configs (0.1); with dropout CVPT folds per sample')
    p.add_argument('--cross-proj-drop', type=float, default=0.1,
                   help="CVPT's dropout on the cross-attention output, as the configs (0.1)")
    p.add_argument('--fold', default='auto', choices=['auto', 'always', 'never'],
                   help="CVPT's cross-attention form")
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
                   'with two (eager, then --compile), also the speed-up of each case')
    p.add_argument('--case', help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args(argv)
    args.dtype = args.dtype or ('bf16' if args.device == 'cuda' else 'fp32')
    args.no_flops = args.no_flops or args.compile  # the same as eager's; not counted twice
    return args


def _cuda():
    import torch
    return torch.cuda.is_available()


# ---------------------------------------------------------------------------- one case
def build(args, method, prompts):
    """The backbone alone, or the UperNet segmentor of the configs at the trunk's width."""
    import timm
    from mmengine.config import Config
    from mmseg.registry import MODELS
    kwargs = model_kwargs(args)
    probe = timm.create_model(args.model, pretrained=False, **kwargs)
    depth, width = len(probe.blocks), probe.embed_dim
    del probe
    out_indices = tuple(depth * k // 4 - 1 for k in (1, 2, 3, 4))
    backbone = dict(type=METHOD_TYPES[method], model_name=args.model, img_size=args.img,
                    out_indices=out_indices, with_cp=args.with_cp, model_kwargs=kwargs,
                    trunk_dtype=args.trunk_dtype)
    if method != 'trunk':
        backbone.update(num_prompts=prompts, prompt_dropout=args.prompt_dropout)
    if method == 'cvpt':
        backbone.update(cross_attn_fold=args.fold, cross_proj_drop=args.cross_proj_drop)
    if args.head == 'none':
        return MODELS.build(backbone)
    model = Config.fromfile(osp.join(REPO, 'configs/_base_/models/upernet_vitl_prompt.py')).model
    norm = dict(type='BN', requires_grad=True)  # one process: SyncBN has nothing to sync with
    model.backbone = backbone
    model.data_preprocessor = None
    model.neck.update(embed_dim=width, norm_cfg=norm)
    model.decode_head.update(in_channels=[width] * 4, norm_cfg=norm)
    model.auxiliary_head.update(in_channels=width, norm_cfg=norm)
    return MODELS.build(model)


def model_kwargs(args) -> dict:
    """``--model-kwargs key=int ...`` as a dict."""
    out = {}
    for item in args.model_kwargs:
        key, _, value = item.partition('=')
        out[key] = int(value)
    return out


def count_ops(args, method, prompts):
    """The operators (views left out) of one training step, forward and backward as
    ``--dtype`` trains, and of one inference forward; the copies among them."""
    import torch
    from mmengine.registry import init_default_scope

    import mmseg_prompt  # noqa: F401
    from mmseg_prompt.utils.op_counter import KernelOpCounter
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = build(args, method, prompts)
    form = None
    if method == 'cvpt':  # counted on the CPU, in the form fold='auto' picks on --device
        form = _cross_form(args, model, prompts)
        _backbone(args, model).prompts.cross_attn.fold = 'always' if form == 'folded' else 'never'
    x = torch.randn(args.batch, 3, args.img, args.img)
    if method == 'trunk':
        x.requires_grad_(True)  # the loss back-propagates through every frozen block
    model.train()
    _train_step(args, model, x, None)  # once untimed and uncounted: lazy set-up stays out
    for p in model.parameters():  # as the optimizer's zero_grad(set_to_none=True) leaves them
        p.grad = None
    with KernelOpCounter() as train:
        _train_step(args, model, x, None)
    model.eval()
    x.requires_grad_(False)
    _infer(args, model, x)
    with KernelOpCounter() as infer:
        _infer(args, model, x)
    depth = _backbone(args, model).depth
    return dict(method=method, prompts=prompts if method != 'trunk' else 0, depth=depth, form=form,
                train_ops=train.total, train_copies=train.copies, infer_ops=infer.total,
                infer_copies=infer.copies, train_counts=dict(train.counts.most_common()))


def op_table(meta, results):
    """The kernel-launch table: per method, the operators of a training step and an inference,
    the extra per (prompted) block against the frozen trunk, and the copies."""
    base = next((r for r in results if r['method'] == 'trunk'), None)
    lines = [f"kernel-launching operators (views left out), {meta['model']} "
             f"{meta['model_kwargs']} at {meta['img']}x{meta['img']}, batch {meta['batch']}, "
             f"{meta['dtype'] or 'fp32'}, forms of {meta['device']}, trunk stored in "
             f"{meta['trunk_dtype']}, prompt dropout {meta['prompt_dropout']}, "
             f"cross_proj_drop {meta['cross_proj_drop']}, fold={meta['fold']}", '',
             '| method | ops per training step | extra per block | copies (train) | '
             'ops per inference | extra per block | copies (infer) |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for r in results:
        name = 'frozen trunk' if r['method'] == 'trunk' else \
            f"{dict(vpt='VPT-Deep', cvpt='CVPT')[r['method']]}, {r['prompts']}"
        if r.get('form'):
            name += f" ({r['form']})"
        extra = ['-', '-']
        if base is not None and r is not base:
            extra = [f"{(r[k] - base[k]) / r['depth']:.1f}" for k in ('train_ops', 'infer_ops')]
        lines.append(f"| {name} | {r['train_ops']} | {extra[0]} | {r['train_copies']} | "
                     f"{r['infer_ops']} | {extra[1]} | {r['infer_copies']} |")
    return '\n'.join(lines)


def run_case(args, method, prompts):
    """One case in this process: tuned parameters, training-step and inference times, peak
    memory and, unless ``--no-flops``, the FLOPs of both."""
    import torch
    from mmengine.registry import init_default_scope

    import mmseg_prompt  # noqa: F401
    import mmseg_prompt.tooling.complexity  # noqa: F401  (imported before the peak RSS is read)
    init_default_scope('mmseg')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(args, method, prompts)
    model.to(device)
    x = torch.randn(args.batch, 3, args.img, args.img, device=device)
    result = dict(method=method, prompts=prompts if method != 'trunk' else 0)
    if method == 'cvpt':
        result['cross_form'] = _cross_form(args, model, prompts)
    tuned = [p for p in model.parameters() if p.requires_grad]
    result['tuned_params'] = sum(p.numel() for p in tuned)
    if args.compile:
        _compile(args, model)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    result.update(_train_costs(args, method, prompts, model, x, tuned))
    model.eval()
    result['infer_s'] = _median_time(args, partial(_infer, args, model, x), device)
    result['peak_mib'] = _peak_mib(device)
    if not args.no_flops:
        result.update(_inference_flops(args, method, prompts, model, x))
    return result


def _sync(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _autocast(args, device):
    """Autocast to ``--dtype`` on ``device`` (a no-op for fp32)."""
    import torch
    dtype = dict(fp32=None, bf16=torch.bfloat16)[args.dtype]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _timed(fn, n, device):
    """Seconds of each of ``n`` calls of ``fn``, the device synchronised around each."""
    times = []
    for _ in range(n):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _median_time(args, fn, device):
    """The median seconds of ``--repeats`` calls of ``fn`` after ``--warmup`` untimed ones."""
    _timed(fn, args.warmup, device)
    return statistics.median(_timed(fn, args.repeats, device))


def _backbone(args, model):
    """The backbone of the case: the model itself, or the segmentor's (``--head upernet``)."""
    return model if args.head == 'none' else model.backbone


def _cross_form(args, model, prompts):
    """'folded' or 'plain': the cross-attention form CVPT runs at this prompt count."""
    backbone = _backbone(args, model)
    attn = backbone.trunk.blocks[0].attn
    folded = backbone.prompts.cross_attn.use_fold(attn, prompts, backbone.embed_dim,
                                                  args.device)
    return 'folded' if folded else 'plain'


def _compile(args, model):
    """``torch.compile`` the backbone, neck and heads in place (``--compile-backend``)."""
    for part in ('backbone', 'neck', 'decode_head', 'auxiliary_head'):
        sub = model if args.head == 'none' and part == 'backbone' else getattr(model, part, None)
        if sub is not None:
            sub.compile(backend=args.compile_backend)


def _forward_loss(args, model, x):
    """The training loss of the batch: the mean square of the backbone's outputs, or the
    segmentor's losses on random labels."""
    import torch
    if args.head == 'none':
        return sum(o.float().square().mean() for o in model(x))
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(args.batch):
        s = SegDataSample(metainfo=dict(img_shape=(args.img,) * 2, pad_shape=(args.img,) * 2))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, args.img, args.img),
                                                    device=x.device))
        samples.append(s)
    losses = model.loss(x, samples)
    return sum(v for k, v in losses.items() if 'loss' in k)


def _train_step(args, model, x, opt):
    """Forward, backward and (with tuned parameters) an AdamW step."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    with _autocast(args, x.device):
        loss = _forward_loss(args, model, x)
    loss.backward()
    if opt is not None:
        opt.step()


def _train_costs(args, method, prompts, model, x, tuned):
    """Training-step times (``head_only_s`` for a trunk with a head, ``train_s``) and FLOPs
    (``train_gflops``), with ``--profile`` a profile of one step. The optimizer and its state
    live in this call only, so they are freed before the inference that follows."""
    import torch
    model.train()
    opt = torch.optim.AdamW(tuned, lr=1e-4) if tuned else None
    step = partial(_train_step, args, model, x, opt)
    out = {}
    if method == 'trunk':
        # The floor of any prompt method: the loss back-propagated through every frozen block
        # (to the input), the head's weights trained. Without it the backward stops at the head.
        if tuned:
            out['head_only_s'] = _median_time(args, step, x.device)
        x.requires_grad_(True)
    out['train_s'] = _median_time(args, step, x.device)
    if args.profile:
        _profile(step, x.device, osp.join(args.out, f'profile_{method}_{prompts}.txt'))
    if not args.no_flops:
        grads = tuned + ([x] if method == 'trunk' else [])
        out['train_gflops'] = _train_flops(partial(_forward_loss, args, model, x), grads) / 1e9
    x.requires_grad_(False)
    x.grad = None
    return out


def _infer(args, model, x):
    """One inference forward of the batch."""
    import torch
    with torch.no_grad(), _autocast(args, x.device):
        model(x) if args.head == 'none' else model(x, mode='tensor')


def _peak_mib(device):
    """The CUDA allocator's peak on GPU, the process's peak RSS on CPU, in MiB."""
    import torch
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _inference_flops(args, method, prompts, model, x):
    """``gflops`` of one inference forward of the batch, traced in fp32 on the CPU (the model is
    moved there; under ``--compile`` a fresh one is built), and the operators the analyzer left
    out (``unsupported_ops``)."""
    from mmseg_prompt.tooling.complexity import SegmentorForward, flop_analyzer
    if args.compile:
        model = build(args, method, prompts)
    model.float().cpu().eval()
    xc = x.float().cpu()
    analyzer = flop_analyzer(model if args.head == 'none' else SegmentorForward(model), (xc,))
    return dict(gflops=analyzer.total() / 1e9, unsupported_ops=dict(analyzer.unsupported_ops()))


def _profile(step, device, path):
    """One profiled training step, its operators by self time, written to ``path``."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
    key = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    with open(path, 'w') as f:
        f.write(prof.key_averages().table(sort_by=key, row_limit=30))


def _train_flops(forward_loss, tuned):
    """Multiply-adds of one forward + backward, counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import (FlopCounterMode, sdpa_backward_flop_count,
                                          sdpa_flop_count)
    aten = torch.ops.aten

    def fwd(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, q, k, v)
    cpu_sdpa = {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
                aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd}
    counter = FlopCounterMode(display=False, custom_mapping=cpu_sdpa)
    with counter:
        forward_loss().backward()
    for p in tuned:
        p.grad = None
    return counter.get_total_flops() / 2  # torch counts a multiply-add as 2


# ---------------------------------------------------------------------------- the table
def cases(args):
    out = []
    if 'trunk' in args.methods:
        out.append(('trunk', 0))
    for method in ('vpt', 'cvpt'):
        if method in args.methods:
            out += [(method, m) for m in args.prompts]
    return out


def run_all(args):
    os.makedirs(args.out, exist_ok=True)
    per_case = {c: [] for c in cases(args)}
    for r in range(args.rounds):
        if args.rounds > 1:
            print(f'round {r + 1}/{args.rounds}', flush=True)
        for method, m in per_case:
            cmd = [sys.executable, osp.abspath(__file__), '--case', f'{method}:{m}'] + \
                [a for a in sys.argv[1:]]
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f'case {method} {m} failed:\n{proc.stderr[-3000:]}')
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            per_case[(method, m)].append(res)
            print(f'  {method:5s} M={m:<4d} train {res.get("train_s", float("nan")):7.3f} s  '
                  f'infer {res["infer_s"]:7.3f} s  peak {res["peak_mib"]:8.0f} MiB  '
                  f'{res.get("gflops", float("nan")):8.1f} GFLOPs  ({time.time() - t0:.0f} s)',
                  flush=True)
    results = [merge_rounds(rounds) for rounds in per_case.values()]
    meta = dict(model=args.model, img=args.img, batch=args.batch, device=args.device,
                dtype=args.dtype, head=args.head, prompt_dropout=args.prompt_dropout,
                cross_proj_drop=args.cross_proj_drop,
                fold=args.fold, with_cp=args.with_cp,
                compile=args.compile and args.compile_backend,
                warmup=args.warmup, repeats=args.repeats,
                rounds=args.rounds, threads=args.threads or _threads())
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    print(table(meta, results))
    print(summary(results))
    plot(meta, results, osp.join(args.out, 'cost_vs_prompts.png'))
    print(f'\nwrote {osp.join(args.out, "results.json")} and cost_vs_prompts.png')
    return results


def count_all(args):
    """``--count-ops``: every case in a fresh process; prints the table, writes ops.json."""
    os.makedirs(args.out, exist_ok=True)
    results = []
    for method, m in cases(args):
        cmd = [sys.executable, osp.abspath(__file__), '--case', f'{method}:{m}'] + sys.argv[1:]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f'case {method} {m} failed:\n{proc.stderr[-3000:]}')
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    meta = dict(model=args.model, model_kwargs=model_kwargs(args), img=args.img,
                batch=args.batch, dtype=args.dtype, prompt_dropout=args.prompt_dropout,
                cross_proj_drop=args.cross_proj_drop, fold=args.fold, device=args.device,
                trunk_dtype=args.trunk_dtype)
    with open(osp.join(args.out, 'ops.json'), 'w') as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    print(op_table(meta, results))
    print(f'\nwrote {osp.join(args.out, "ops.json")}')
    return results


def merge_rounds(rounds):
    """One case over its rounds: median times, the highest peak, the (equal) FLOPs."""
    merged = dict(rounds[0])
    for key in ('train_s', 'infer_s'):
        if key in merged:
            merged[key] = statistics.median(r[key] for r in rounds)
            merged[key + '_rounds'] = [r[key] for r in rounds]
    merged['peak_mib'] = max(r['peak_mib'] for r in rounds)
    return merged


def summary(results):
    """The ratios the cost targets are stated in, and a linear fit of CVPT's cost in M."""
    vpt = {r['prompts']: r for r in results if r['method'] == 'vpt' and 'train_s' in r}
    cvpt = [r for r in results if r['method'] == 'cvpt' and 'train_s' in r]
    trunk = next((r for r in results if r['method'] == 'trunk' and 'train_s' in r), None)
    lines = []
    for r in cvpt:
        m = r['prompts']
        parts = [f'CVPT-{m}:']
        if trunk is not None:
            parts.append(f'train {r["train_s"] / trunk["train_s"]:.3f}x the frozen trunk\'s '
                         f'forward + backward')
        for ref in ([1] if m != 1 else []) + [m]:
            if ref not in vpt:
                continue
            v = vpt[ref]
            part = f'train {r["train_s"] / v["train_s"]:.3f}x VPT-Deep-{ref}'
            if 'train_gflops' in r and 'train_gflops' in v:
                part += f' (train FLOPs {r["train_gflops"] / v["train_gflops"]:.3f}x)'
            if ref == m:
                part += f', peak memory {r["peak_mib"] / v["peak_mib"]:.2f}x'
            parts.append(part)
        if len(parts) > 1:
            lines.append(' '.join(parts[:2]) + ''.join('; ' + q for q in parts[2:]))
    # linear in M within each form of the cross-attention (the form switches at H M = D)
    for form in ('folded', 'plain'):
        rows = [r for r in cvpt if r.get('cross_form') == form]
        if len(rows) < 3:
            continue
        for key, label in (('train_s', 'train step (s)'), ('train_gflops', 'train GFLOPs')):
            if not all(key in r for r in rows):
                continue
            ms, ys = [r['prompts'] for r in rows], [r[key] for r in rows]
            slope, icpt, r2, worst = linear_fit(ms, ys)
            lines.append(f'CVPT {form} form, {label} at M = {ms}: {icpt:.4g} + {slope:.4g} * M, '
                         f'R^2 {r2:.4f}, largest deviation from the line {100 * worst:.1f}%')
    return '\n' + '\n'.join(lines) if lines else ''


def compare(eager, compiled):
    """Speed-up of each case, eager time / compiled time, for two runs of the same sweep."""
    names = dict(trunk='frozen trunk', vpt='VPT-Deep', cvpt='CVPT')
    other = {(r['method'], r['prompts']): r for r in compiled['results']}
    lines = ['\n| method | prompts | train step eager (s) | compiled (s) | speed-up | '
             'inference eager (s) | compiled (s) | speed-up |', '|---|---|---|---|---|---|---|---|']
    for r in eager['results']:
        c = other.get((r['method'], r['prompts']))
        if c is None:
            continue
        lines.append(f'| {names[r["method"]]} | {r["prompts"] or "-"} | {r["train_s"]:.4f} | '
                     f'{c["train_s"]:.4f} | {r["train_s"] / c["train_s"]:.2f}x | '
                     f'{r["infer_s"]:.4f} | {c["infer_s"]:.4f} | '
                     f'{r["infer_s"] / c["infer_s"]:.2f}x |')
    return '\n'.join(lines)


def linear_fit(xs, ys):
    """Least squares y = a + b x: (b, a, R^2, largest |residual| / y)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    icpt = my - slope * mx
    res = [y - (icpt + slope * x) for x, y in zip(xs, ys)]
    sst = sum((y - my) ** 2 for y in ys)
    r2 = 1 - sum(e * e for e in res) / sst if sst > 0 else 1.0
    return slope, icpt, r2, max(abs(e) / y for e, y in zip(res, ys))


def _threads():
    import torch
    return torch.get_num_threads()


def table(meta, results):
    vpt = {r['prompts']: r for r in results if r['method'] == 'vpt'}
    lines = [f'\n{meta["model"]}, {meta["img"]}x{meta["img"]}, batch {meta["batch"]}, '
             f'{meta["device"]} {meta["dtype"]}, head {meta["head"]}, prompt dropout '
             f'{meta["prompt_dropout"]}, CVPT output dropout {meta["cross_proj_drop"]}'
             + (f', torch.compile ({meta["compile"]})' if meta.get('compile') else ', eager')
             + ', medians '
             f'of {meta["repeats"]} after {meta["warmup"]} warm-up'
             + (f', median of {meta["rounds"]} interleaved rounds' if meta.get('rounds', 1) > 1
                else '') + '\n',
             '| method | prompts | train step (s) | inference (s) | peak memory (MiB) | '
             'GFLOPs (fwd) | GFLOPs (train step) | train vs VPT-Deep, same M |',
             '|---|---|---|---|---|---|---|---|']
    names = dict(trunk='frozen trunk', vpt='VPT-Deep', cvpt='CVPT')
    for r in results:
        train = f'{r["train_s"]:.3f}' if 'train_s' in r else 'n/a (inference only)'
        if 'head_only_s' in r:
            train += f' (backward to the head only: {r["head_only_s"]:.3f})'
        ratio = ''
        if r['method'] == 'cvpt' and r['prompts'] in vpt:
            ratio = f'{r["train_s"] / vpt[r["prompts"]]["train_s"]:.2f}x'
        train_flops = f'{r["train_gflops"]:.1f}' if 'train_gflops' in r else 'n/a'
        flops = f'{r["gflops"]:.1f}' if 'gflops' in r else 'n/a'
        lines.append(f'| {names[r["method"]]} | {r["prompts"] or "-"} | {train} | '
                     f'{r["infer_s"]:.3f} | {r["peak_mib"]:.0f} | {flops} | '
                     f'{train_flops} | {ratio} |')
    return '\n'.join(lines)


def plot(meta, results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    keys = [('train_s', 'training step (s)'), ('gflops', 'GFLOPs (inference forward)'),
            ('peak_mib', 'peak memory (MiB)')]
    for ax, (key, label) in zip(axes, keys):
        for method, style in (('vpt', 'o-'), ('cvpt', 's-')):
            rows = [r for r in results if r['method'] == method and key in r]
            if rows:
                ax.plot([r['prompts'] for r in rows], [r[key] for r in rows], style,
                        label=dict(vpt='VPT-Deep', cvpt='CVPT')[method])
        trunk = [r for r in results if r['method'] == 'trunk' and key in r]
        if trunk:
            ax.axhline(trunk[0][key], color='gray', ls='--', label='frozen trunk')
        ax.set_xlabel('prompts per block')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f'{meta["model"]} {meta["img"]}x{meta["img"]}, batch {meta["batch"]}, '
                 f'{meta["device"]} {meta["dtype"]}')
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    if args.case:
        method, m = args.case.split(':')
        case = count_ops if args.count_ops else run_case
        print(json.dumps(case(args, method, int(m))))
        return
    if args.count_ops:
        count_all(args)
        return
    if args.report:
        runs = []
        for path in args.report:
            with open(path) as f:
                runs.append(json.load(f))
            print(table(runs[-1]['meta'], runs[-1]['results']))
            print(summary(runs[-1]['results']))
            plot(runs[-1]['meta'], runs[-1]['results'],
                 osp.join(osp.dirname(path), 'cost_vs_prompts.png'))
        if len(runs) == 2:
            print(compare(*runs))
        return
    run_all(args)


if __name__ == '__main__':
    main()
