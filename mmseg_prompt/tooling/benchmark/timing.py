"""Timing one case in this process (docs/cost.md, "The benchmark"): its tuned parameters, the
median seconds of a training step and of an inference forward, the peak memory and, unless
``--no-flops``, the FLOPs of both (``tooling/flops.py``). ``args`` are the tool's flags.

Times are medians over ``--repeats`` calls after ``--warmup`` untimed ones, the device
synchronised around each. Peak memory is the CUDA allocator's peak on GPU, the process's peak
RSS on CPU, so each case runs in a fresh process.
"""
import os.path as osp
import resource
import statistics
import time
from functools import partial
from typing import Callable, List

import torch
import torch.nn as nn

from ..complexity import SegmentorForward
from ..flops import inference_flops, train_flops
from . import steps
from .cases import Case, backbone_of, build, cross_attention_form, is_bare_trunk


def run_case(args, case: Case, path: str = '') -> dict:
    """The case's row of ``results.json``: ``method``, ``prompts``, ``cross_form`` (with a
    cross-attention part), ``tuned_params``, ``head_only_s`` (the bare trunk with a head),
    ``train_s``, ``train_gflops``, ``infer_s``, ``peak_mib``, ``gflops``, ``unsupported_ops``."""
    from mmengine.registry import init_default_scope

    import mmseg_prompt  # noqa: F401
    init_default_scope('mmseg')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(case, args, path)
    model.to(device)
    x = torch.randn(args.batch, 3, args.img, args.img, device=device)
    result = dict(method=case.spec.method, prompts=case.prompts)
    backbone = backbone_of(model, args.head)
    form = cross_attention_form(backbone, args.device)
    if form is not None:
        result['cross_form'] = form
    tuned = [p for p in model.parameters() if p.requires_grad]
    result['tuned_params'] = sum(p.numel() for p in tuned)
    if args.compile:
        compile_model(args, model)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    result.update(train_costs(args, case, model, x, tuned, is_bare_trunk(backbone)))
    model.eval()
    result['infer_s'] = median_time(args, partial(steps.infer, args, model, x), device)
    result['peak_mib'] = peak_mib(device)
    if not args.no_flops:
        if args.compile:  # counted on a fresh eager model
            model = build(case, args, path)
        model.float().cpu().eval()
        xc = x.float().cpu()
        traced = model if args.head == 'none' else SegmentorForward(model)
        total, unsupported = inference_flops(traced, (xc,))
        result.update(gflops=total / 1e9, unsupported_ops=unsupported)
    return result


def train_costs(args, case: Case, model: nn.Module, x: torch.Tensor, tuned: List[torch.Tensor],
                bare: bool) -> dict:
    """Training-step times (``head_only_s`` for the bare trunk with a head, ``train_s``) and
    FLOPs (``train_gflops``), with ``--profile`` a profile of one step. The bare trunk's loss
    back-propagates through every frozen block, to the input: the floor of any tuning part. The
    optimizer and its state live in this call only, so they are freed before the inference
    that follows."""
    model.train()
    opt = torch.optim.AdamW(tuned, lr=1e-4) if tuned else None
    step = partial(steps.train_step, args, model, x, opt)
    out = {}
    if bare:
        # without the input's gradient the backward would stop at the head (linear probing)
        if tuned:
            out['head_only_s'] = median_time(args, step, x.device)
        x.requires_grad_(True)
    out['train_s'] = median_time(args, step, x.device)
    if args.profile:
        profile(step, x.device,
                osp.join(args.out, f'profile_{case.spec.method}_{case.prompts}.txt'))
    if not args.no_flops:
        grads = tuned + ([x] if bare else [])
        out['train_gflops'] = train_flops(partial(steps.forward_loss, args, model, x),
                                          grads) / 1e9
    x.requires_grad_(False)
    x.grad = None
    return out


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], n: int, device: torch.device) -> List[float]:
    """Seconds of each of ``n`` calls of ``fn``, the device synchronised around each."""
    times = []
    for _ in range(n):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def median_time(args, fn: Callable[[], None], device: torch.device) -> float:
    """The median seconds of ``--repeats`` calls of ``fn`` after ``--warmup`` untimed ones."""
    timed(fn, args.warmup, device)
    return statistics.median(timed(fn, args.repeats, device))


def peak_mib(device: torch.device) -> float:
    """The CUDA allocator's peak on GPU, the process's peak RSS on CPU, in MiB."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compile_model(args, model: nn.Module) -> None:
    """``torch.compile`` the backbone, neck and heads in place (``--compile-backend``)."""
    for part in ('backbone', 'neck', 'decode_head', 'auxiliary_head'):
        sub = model if args.head == 'none' and part == 'backbone' else getattr(model, part, None)
        if sub is not None:
            sub.compile(backend=args.compile_backend)


def profile(step: Callable[[], None], device: torch.device, path: str) -> None:
    """One profiled training step, its operators by self time, written to ``path``."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    with torch_profile(activities=activities) as prof:
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
    key = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    with open(path, 'w') as f:
        f.write(prof.key_averages().table(sort_by=key, row_limit=30))
