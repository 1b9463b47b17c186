"""The benchmark's report (docs/cost.md): the markdown tables of a timed sweep and of an operator
count, the ratios the cost targets are stated in, a linear fit of a compared case's cost in the
prompt count, the eager/compiled speed-ups and the plot of cost against prompt count.

``meta`` and ``results`` are ``results.json``'s (or ``ops.json``'s); ``cases`` is the case file
(``cases.CaseFile``) that names the methods and says which case each is compared with
(``reference``) and which case the ratios are against (``baseline``).
"""
import statistics
from typing import List, Optional, Sequence, Tuple

from .cases import CaseFile

FORMS = ('folded', 'plain', None)  # cross-attention forms the fit separates (None: no form)


def _swept(cases: CaseFile, method: str, results: Sequence[dict]) -> bool:
    """Whether ``method``'s rows run over the prompt counts."""
    if any(s.method == method for s in cases.specs):
        return cases.spec(method).sweep is not None
    return any(r['prompts'] for r in results if r['method'] == method)


def _label(name: str, prompts: int, swept: bool, sep: str) -> str:
    return f'{name}{sep}{prompts}' if swept else name


def _reference_row(cases: CaseFile, results: Sequence[dict], method: str,
                   prompts: int) -> Optional[dict]:
    """The timed row ``method``'s case is compared with at ``prompts`` prompts: its reference's
    row at that count (a reference without a sweep: its one row), or None."""
    spec = next((s for s in cases.specs if s.method == method), None)
    if spec is None or spec.reference is None:
        return None
    rows = [r for r in results if r['method'] == spec.reference and 'train_s' in r]
    if not _swept(cases, spec.reference, results):
        return rows[0] if rows else None
    return next((r for r in rows if r['prompts'] == prompts), None)


def _baseline_row(cases: CaseFile, results: Sequence[dict], key: str) -> Optional[dict]:
    return next((r for r in results if r['method'] == cases.baseline and key in r), None)


def table(meta: dict, results: Sequence[dict], cases: CaseFile) -> str:
    """The markdown table of a timed sweep, under a line of its settings."""
    refs = {cases.name(s.reference) for s in cases.specs if s.reference}
    ref = refs.pop() if len(refs) == 1 else 'reference'
    lines = [f'\n{meta["model"]}, {meta["img"]}x{meta["img"]}, batch {meta["batch"]}, '
             f'{meta["device"]} {meta["dtype"]}, head {meta["head"]}, prompt dropout '
             f'{meta["prompt_dropout"]}, CVPT output dropout {meta["cross_proj_drop"]}'
             + (f', torch.compile ({meta["compile"]})' if meta.get('compile') else ', eager')
             + ', medians '
             f'of {meta["repeats"]} after {meta["warmup"]} warm-up'
             + (f', median of {meta["rounds"]} interleaved rounds' if meta.get('rounds', 1) > 1
                else '') + '\n',
             '| method | prompts | train step (s) | inference (s) | peak memory (MiB) | '
             f'GFLOPs (fwd) | GFLOPs (train step) | train vs {ref}, same M |',
             '|---|---|---|---|---|---|---|---|']
    for r in results:
        train = f'{r["train_s"]:.3f}' if 'train_s' in r else 'n/a (inference only)'
        if 'head_only_s' in r:
            train += f' (backward to the head only: {r["head_only_s"]:.3f})'
        ratio = ''
        other = _reference_row(cases, results, r['method'], r['prompts'])
        if 'train_s' in r and other is not None:
            ratio = f'{r["train_s"] / other["train_s"]:.2f}x'
        train_flops = f'{r["train_gflops"]:.1f}' if 'train_gflops' in r else 'n/a'
        flops = f'{r["gflops"]:.1f}' if 'gflops' in r else 'n/a'
        lines.append(f'| {cases.name(r["method"])} | {r["prompts"] or "-"} | {train} | '
                     f'{r["infer_s"]:.3f} | {r["peak_mib"]:.0f} | {flops} | '
                     f'{train_flops} | {ratio} |')
    return '\n'.join(lines)


def summary(results: Sequence[dict], cases: CaseFile) -> str:
    """For each case with a ``reference``: its training step against the baseline's and against
    the reference's at 1 prompt and at its own count (FLOPs and peak memory there too), then a
    linear fit of its cost in the prompt count within each cross-attention form."""
    base = _baseline_row(cases, results, 'train_s')
    lines = []
    for r in results:
        spec = next((s for s in cases.specs if s.method == r['method']), None)
        if spec is None or spec.reference is None or 'train_s' not in r:
            continue
        m, swept = r['prompts'], spec.sweep is not None
        ref_swept = _swept(cases, spec.reference, results)
        parts = [_label(spec.name, m, swept, '-') + ':']
        if base is not None and base is not r:
            parts.append(f'train {r["train_s"] / base["train_s"]:.3f}x the '
                         f'{cases.name(cases.baseline)}\'s forward + backward')
        for ref in (([1] if m != 1 else []) + [m]) if ref_swept else [m]:
            v = _reference_row(cases, results, r['method'], ref)
            if v is None:
                continue
            part = (f'train {r["train_s"] / v["train_s"]:.3f}x '
                    f'{_label(cases.name(spec.reference), ref, ref_swept, "-")}')
            if 'train_gflops' in r and 'train_gflops' in v:
                part += f' (train FLOPs {r["train_gflops"] / v["train_gflops"]:.3f}x)'
            if ref == m:
                part += f', peak memory {r["peak_mib"] / v["peak_mib"]:.2f}x'
            parts.append(part)
        if len(parts) > 1:
            lines.append(' '.join(parts[:2]) + ''.join('; ' + q for q in parts[2:]))
    # linear in M within each form of the cross-attention (the form switches at H M = D)
    for spec in cases.specs:
        if spec.reference is None or spec.sweep is None:
            continue
        mine = [r for r in results if r['method'] == spec.method and 'train_s' in r]
        for form in FORMS:
            rows = [r for r in mine if r.get('cross_form') == form]
            if len(rows) < 3:
                continue
            what = f'{spec.name} {form} form' if form else spec.name
            for key, label in (('train_s', 'train step (s)'), ('train_gflops', 'train GFLOPs')):
                if not all(key in r for r in rows):
                    continue
                ms, ys = [r['prompts'] for r in rows], [r[key] for r in rows]
                slope, icpt, r2, worst = linear_fit(ms, ys)
                lines.append(f'{what}, {label} at M = {ms}: {icpt:.4g} + {slope:.4g} * M, '
                             f'R^2 {r2:.4f}, largest deviation from the line {100 * worst:.1f}%')
    return '\n' + '\n'.join(lines) if lines else ''


def compare(eager: dict, compiled: dict, cases: CaseFile) -> str:
    """Speed-up of each case, eager time / compiled time, for two runs of the same sweep."""
    other = {(r['method'], r['prompts']): r for r in compiled['results']}
    lines = ['\n| method | prompts | train step eager (s) | compiled (s) | speed-up | '
             'inference eager (s) | compiled (s) | speed-up |', '|---|---|---|---|---|---|---|---|']
    for r in eager['results']:
        c = other.get((r['method'], r['prompts']))
        if c is None:
            continue
        lines.append(f'| {cases.name(r["method"])} | {r["prompts"] or "-"} | '
                     f'{r["train_s"]:.4f} | {c["train_s"]:.4f} | '
                     f'{r["train_s"] / c["train_s"]:.2f}x | '
                     f'{r["infer_s"]:.4f} | {c["infer_s"]:.4f} | '
                     f'{r["infer_s"] / c["infer_s"]:.2f}x |')
    return '\n'.join(lines)


def op_table(meta: dict, results: Sequence[dict], cases: CaseFile) -> str:
    """The kernel-launch table: per case, the operators of a training step and an inference,
    the extra per block against the baseline, and the copies."""
    base = next((r for r in results if r['method'] == cases.baseline), None)
    lines = [f"kernel-launching operators (views left out), {meta['model']} "
             f"{meta['model_kwargs']} at {meta['img']}x{meta['img']}, batch {meta['batch']}, "
             f"{meta['dtype'] or 'fp32'}, forms of {meta['device']}, trunk stored in "
             f"{meta['trunk_dtype']}, prompt dropout {meta['prompt_dropout']}, "
             f"cross_proj_drop {meta['cross_proj_drop']}, fold={meta['fold']}", '',
             '| method | ops per training step | extra per block | copies (train) | '
             'ops per inference | extra per block | copies (infer) |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for r in results:
        name = _label(cases.name(r['method']), r['prompts'],
                      _swept(cases, r['method'], results), ', ')
        if r.get('form'):
            name += f" ({r['form']})"
        extra = ['-', '-']
        if base is not None and r is not base:
            extra = [f"{(r[k] - base[k]) / r['depth']:.1f}" for k in ('train_ops', 'infer_ops')]
        lines.append(f"| {name} | {r['train_ops']} | {extra[0]} | {r['train_copies']} | "
                     f"{r['infer_ops']} | {extra[1]} | {r['infer_copies']} |")
    return '\n'.join(lines)


def merge_rounds(rounds: Sequence[dict]) -> dict:
    """One case over its rounds: median times, the highest peak, the (equal) FLOPs."""
    merged = dict(rounds[0])
    for key in ('train_s', 'infer_s'):
        if key in merged:
            merged[key] = statistics.median(r[key] for r in rounds)
            merged[key + '_rounds'] = [r[key] for r in rounds]
    merged['peak_mib'] = max(r['peak_mib'] for r in rounds)
    return merged


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Tuple[float, float, float, float]:
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


MARKERS = ('o-', 's-', '^-', 'D-', 'v-', 'P-', 'X-')


def plot(meta: dict, results: Sequence[dict], path: str, cases: CaseFile) -> None:
    """Training step, inference GFLOPs and peak memory against the prompt count: a line per
    swept case, a dashed level per other case (the baseline's grey), written to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    methods: List[str] = list(dict.fromkeys(r['method'] for r in results))
    swept = [m for m in methods if _swept(cases, m, results)]
    levels = [m for m in methods if m not in swept]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    keys = [('train_s', 'training step (s)'), ('gflops', 'GFLOPs (inference forward)'),
            ('peak_mib', 'peak memory (MiB)')]
    for ax, (key, label) in zip(axes, keys):
        for method, style in zip(swept, MARKERS * len(swept)):
            rows = [r for r in results if r['method'] == method and key in r]
            if rows:
                ax.plot([r['prompts'] for r in rows], [r[key] for r in rows], style,
                        label=cases.name(method))
        for method in levels:
            rows = [r for r in results if r['method'] == method and key in r]
            if rows:
                style = dict(color='gray', ls='--') if method == cases.baseline else dict(ls=':')
                ax.axhline(rows[0][key], label=cases.name(method), **style)
        ax.set_xlabel('prompts per block')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f'{meta["model"]} {meta["img"]}x{meta["img"]}, batch {meta["batch"]}, '
                 f'{meta["device"]} {meta["dtype"]}')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
