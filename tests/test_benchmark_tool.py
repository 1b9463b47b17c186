"""The cost benchmark runs end to end on a tiny trunk and reports every column (no timing is
checked here: speed targets are read from the tool's table, never asserted in tests); its cases
come from a case file, so a new tuning part is benchmarked without an edit of the tool."""
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap
from argparse import Namespace

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = f'{REPO}/tools/analysis/benchmark_prompts.py'
DEFAULT_CASES = f'{REPO}/tools/analysis/benchmark_cases.py'
# a tiny ViT: 2 blocks of width 64, 2 heads; 16x16 patches of a 32x32 input: 4 patches + class
DEPTH, WIDTH, TOKENS = 2, 64, 5
TINY = ['--model', 'vit_base_patch16_224', '--model-kwargs', f'depth={DEPTH}',
        f'embed_dim={WIDTH}', 'num_heads=2', '--img', '32']

# A tuning part of the test's own, registered through the case file's custom_imports: per block
# a rank-r branch beside the MLP, g(x) = x A_l B_l (A_l: D x r, B_l: r x D, no bias).
SIDE_BRANCH = '''
import torch.nn as nn
from mmseg.registry import MODELS

from mmseg_prompt.models.backbones.tuning_part import TuningPart


@MODELS.register_module()
class SideBranch(TuningPart):
    NAME = 'side_branch'

    def __init__(self, embed_dim, depth, rank=1):
        super().__init__()
        self.rank = rank
        self.down = nn.ModuleList(nn.Linear(embed_dim, rank, bias=False) for _ in range(depth))
        self.up = nn.ModuleList(nn.Linear(rank, embed_dim, bias=False) for _ in range(depth))

    def beside_mlp(self, index, block):
        return lambda x: self.up[index](self.down[index](x))

    def weights_layout(self):
        return dict(side_branch=dict(rank=self.rank))
'''


def run(args, **kwargs):
    res = subprocess.run([sys.executable, TOOL] + args, capture_output=True, text=True,
                         cwd=REPO, **kwargs)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def table_rows(stdout):
    return [ln for ln in stdout.splitlines() if ln.startswith('|')]


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
    """One sweep of the default cases plus the test's part (swept over its rank, the key its
    case declares), from a case file that adds only the part's entry to the default ones."""
    from mmengine.config import Config
    tmp = tmp_path_factory.mktemp('sweep')
    (tmp / 'side_branch_part.py').write_text(SIDE_BRANCH)
    cases = Config.fromfile(DEFAULT_CASES).to_dict()['cases']
    cases.append(dict(method='side', name='side branch',
                      backbone=dict(parts=[dict(type='SideBranch')]), sweep='parts.0.rank'))
    (tmp / 'cases.py').write_text(textwrap.dedent(f'''\
        custom_imports = dict(imports=['side_branch_part'], allow_failed_imports=False)
        cases = {cases!r}
        baseline = 'trunk'
        '''))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp), REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    res = run(TINY + ['--cases', str(tmp / 'cases.py'), '--methods', 'trunk', 'vpt', 'cvpt',
                      'side', '--batch', '1', '--prompts', '1', '4', '--warmup', '0',
                      '--repeats', '1', '--out', str(tmp / 'out')], env=env)
    data = json.loads((tmp / 'out' / 'results.json').read_text())
    return res, {(r['method'], r['prompts']): r for r in data['results']}, tmp / 'out'


@pytest.mark.slow  # runs the benchmark tool in subprocesses
def test_benchmark_writes_table_json_and_plot(sweep):
    res, rows, out = sweep
    assert '| CVPT | 4 |' in res.stdout and '| VPT-Deep | 1 |' in res.stdout
    assert {('trunk', 0), ('vpt', 1), ('vpt', 4), ('cvpt', 1), ('cvpt', 4)} <= set(rows)
    # the frozen trunk's step back-propagates through every block (the floor of prompt tuning)
    assert rows[('trunk', 0)]['train_s'] > 0 and rows[('cvpt', 4)]['train_s'] > 0
    # ... so its backward counts about as much as its forward (input gradients, no weight ones)
    assert rows[('trunk', 0)]['train_gflops'] > 1.9 * rows[('trunk', 0)]['gflops']
    assert 'head_only_s' not in rows[('trunk', 0)]  # no head here: nothing else to time
    assert 'CVPT-4: train' in res.stdout and 'x VPT-Deep-1' in res.stdout
    assert "x the frozen trunk's forward + backward" in res.stdout
    for r in rows.values():
        assert r['infer_s'] > 0 and r['peak_mib'] > 0
        # attention is counted (through the added handle), not left out as unsupported
        assert 'aten::scaled_dot_product_attention' not in r['unsupported_ops']
    # more prompts, more FLOPs; the prompts are what the methods tune
    assert rows[('vpt', 4)]['gflops'] > rows[('vpt', 1)]['gflops'] > rows[('trunk', 0)]['gflops']
    assert rows[('cvpt', 4)]['gflops'] > rows[('cvpt', 1)]['gflops'] > rows[('trunk', 0)]['gflops']
    assert rows[('cvpt', 4)]['tuned_params'] == DEPTH * 4 * WIDTH
    for key in rows:
        assert rows[key]['train_gflops'] > rows[key]['gflops']  # forward and backward
    assert (out / 'cost_vs_prompts.png').stat().st_size > 10_000
    # 2 heads x 4 prompts < 64: the folded cross-attention ran; VPT-Deep has none
    assert rows[('cvpt', 4)]['cross_form'] == 'folded' and 'cross_form' not in rows[('vpt', 4)]


@pytest.mark.slow  # runs the benchmark tool in subprocesses
def test_a_new_part_is_benchmarked_from_its_case_entry_alone(sweep):
    """The test's own part, known to the tool only through the case file: its rows, its tuned
    parameters (2 D r per block) and its inference multiply-adds over the trunk's, by hand: two
    (T x D) (D x r)-sized products per block and sample, T = 5 tokens."""
    res, rows, _ = sweep
    for r in (1, 4):
        side = rows[('side', r)]
        assert side['tuned_params'] == DEPTH * 2 * WIDTH * r
        extra = (side['gflops'] - rows[('trunk', 0)]['gflops']) * 1e9
        assert extra == pytest.approx(DEPTH * 2 * TOKENS * WIDTH * r, abs=1e-3)
        assert side['train_gflops'] > side['gflops'] and 'cross_form' not in side
        assert f'| side branch | {r} |' in res.stdout
    assert [k for k in rows if k[0] == 'side'] == [('side', 1), ('side', 4)]  # the file's order


@pytest.mark.slow  # runs the benchmark tool in subprocesses
def test_compiled_sweep_and_its_comparison_with_eager(tmp_path):
    """--compile runs every case through torch.compile'd modules (aot_eager here, to keep the
    test short); --report EAGER COMPILED prints both tables again and each case's speed-up.
    The eager run takes two interleaved rounds."""
    common = TINY[:3] + ['depth=4'] + TINY[4:] + [
        '--batch', '2', '--methods', 'trunk', 'cvpt', '--prompts', '2', '--warmup', '1',
        '--repeats', '1', '--head', 'upernet']
    runs, out = {}, {}
    for name, extra in (('eager', ['--no-flops', '--rounds', '2']),
                        ('compiled', ['--compile', '--compile-backend', 'aot_eager'])):
        out[name] = run(common + extra + ['--out', str(tmp_path / name)]).stdout
        runs[name] = json.loads((tmp_path / name / 'results.json').read_text())
        assert 'gflops' not in runs[name]['results'][0]  # FLOPs are counted in eager runs only
    assert runs['compiled']['meta']['compile'] == 'aot_eager'
    assert not runs['eager']['meta']['compile']
    trunk = runs['eager']['results'][0]
    assert trunk['method'] == 'trunk' and trunk['head_only_s'] > 0  # the head trains too
    assert 'round 2/2' in out['eager'] and len(trunk['train_s_rounds']) == 2
    (tmp_path / 'eager' / 'cost_vs_prompts.png').unlink()
    both = run(['--report', str(tmp_path / 'eager' / 'results.json'),
                str(tmp_path / 'compiled' / 'results.json')])
    rows = [ln for ln in both.stdout.splitlines() if ln.startswith('| CVPT | 2 |')]
    assert len(rows) == 3  # the eager table, the compiled table, the comparison
    assert rows[-1].count('x |') == 2  # speed-ups of the training step and of inference
    # a saved run re-prints the same table and redraws its plot
    again = table_rows(both.stdout)
    assert again[:4] == table_rows(out['eager']) and again[4:8] == table_rows(out['compiled'])
    assert (tmp_path / 'eager' / 'cost_vs_prompts.png').exists()


def test_training_flops_count_cpu_attention_forward_and_backward():
    """Attention alone: Q K^T and A V forward (2 B H N M d multiply-adds); the flash backward
    recomputes Q K^T, then dV = A^T dO, dA = dO V^T, dQ = dS K, dK = dS^T Q (5 B H N M d).
    torch's counter skips the CPU kernels unless the formulas are given."""
    import torch
    import torch.nn.functional as F

    from mmseg_prompt.tooling.flops import train_flops
    B, H, N, M, d = 2, 3, 10, 7, 8
    q = torch.randn(B, H, N, d, requires_grad=True)
    k = torch.randn(B, H, M, d, requires_grad=True)
    v = torch.randn(B, H, M, d, requires_grad=True)
    macs = train_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum(), [q, k, v])
    assert macs == 7 * B * H * N * M * d
    assert q.grad is None  # the count leaves no gradients behind


def test_op_counter_counts_what_a_step_dispatches_views_left_out():
    """By hand: (a^T a).relu().sum() and its backward dispatch mm (forward), relu, sum, then
    ones_like (the seed), threshold_backward, two mm (one per use of a) and the add that
    accumulates a's two gradients; the transposes and the expand are views."""
    import torch

    from mmseg_prompt.utils.op_counter import KernelOpCounter
    a = torch.randn(4, 4, requires_grad=True)
    with KernelOpCounter() as ops:
        (a.t() @ a).relu().sum().backward()
    assert dict(ops.counts) == dict(mm=3, relu=1, sum=1, ones_like=1, threshold_backward=1,
                                    add=1)
    assert ops.total == 8 and ops.copies == 0
    with KernelOpCounter() as ops:
        a.to(torch.bfloat16).clone()
    assert ops.copies == 2 and ops.total == 2


def _tiny_args(**kw):
    args = dict(model='vit_base_patch16_224', img=32, head='none', with_cp=False,
                trunk_dtype='float32', model_kwargs=[f'depth={DEPTH}', f'embed_dim={WIDTH}',
                                                    'num_heads=2'],
                prompt_dropout=0.1, cross_proj_drop=0.1, fold='auto')
    args.update(kw)
    return Namespace(**args)


def test_default_cases_build_their_parts_from_the_registry():
    """Each case of the default file builds FrozenViT with the parts it names, the flags and
    the swept count in them; tuned parameters by hand (D = 64, 2 blocks): prompts M D per
    block, LoRA r=8 on q and v 2 (8 D + D 8), AdaptFormer's bottleneck of 64 D 64 + 64 +
    64 D + D, BitFit's bias deltas 11 D per block (norm1, q/k/v, proj, norm2, fc1 4 D, fc2)
    and the patch embedding's D (the final norm is not run)."""
    from mmengine.registry import init_default_scope

    from mmseg_prompt.models.backbones.cross_attention_prompts import CrossAttentionPrompts
    from mmseg_prompt.tooling.benchmark.cases import (Case, build, cross_attention_form,
                                                      is_bare_trunk, load_cases)
    init_default_scope('mmseg')
    cases = load_cases(DEFAULT_CASES, ('prompt_dropout', 'cross_proj_drop', 'fold'))
    assert [s.method for s in cases.select(None)] == ['trunk', 'vpt', 'cvpt']
    assert [s.method for s in cases.select(['lora', 'trunk'])] == ['trunk', 'lora']
    D, L = WIDTH, DEPTH
    tuned = dict(trunk=0, vpt=L * 3 * D, cvpt=L * 3 * D, lora=L * 2 * (8 * D + D * 8),
                 adaptformer=L * (D * 64 + 64 + 64 * D + D), bitfit=L * 11 * D + D)
    parts = dict(trunk=[], vpt=['SequencePrompts'], cvpt=['CrossAttentionPrompts'],
                 lora=['LoRA'], adaptformer=['AdaptFormer'], bitfit=['BitFit'])
    for spec in cases.specs:
        model = build(Case(spec, 3), _tiny_args(fold='never', prompt_dropout=0.2), cases.path)
        assert [type(p).__name__ for p in model.parts] == parts[spec.method]
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == \
            tuned[spec.method]
        assert is_bare_trunk(model) == (spec.method == 'trunk')
        for p in model.parts:
            if hasattr(p, 'dropout_rate'):
                assert p.dropout_rate == 0.2  # --prompt-dropout, where the case routes it
            if isinstance(p, CrossAttentionPrompts):
                assert p.cross_attn.fold == 'never'
        # the form is the model's: fold='never' runs plain even where 'auto' would fold
        assert cross_attention_form(model, 'cpu') == ('plain' if spec.method == 'cvpt' else None)


def test_case_file_errors_name_the_file_the_case_and_the_fix(tmp_path):
    from mmseg_prompt.tooling.benchmark.cases import Case, backbone_config, load_cases
    path = tmp_path / 'cases.py'
    path.write_text("cases = [dict(method='a', name='A', backbone=dict(), sweep='prompts.n')]\n")
    cases = load_cases(str(path))
    with pytest.raises(KeyError, match=r"no case 'b' in .*cases.py \(there: a\)"):
        cases.select(['b'])
    with pytest.raises(ValueError, match=r"case 'a'.*'prompts.n' does not name an option"):
        backbone_config(Case(cases.specs[0], 4), _tiny_args(), str(path), depth=2)
    path.write_text("cases = [dict(method='a', name='A', backbone=dict(), colour=1)]\n")
    with pytest.raises(ValueError, match=r"cases\[0\]: unknown keys \['colour'\]"):
        load_cases(str(path))
    path.write_text("cases = [dict(method='a', name='A', backbone=dict())]\nbaseline = 'x'\n")
    with pytest.raises(ValueError, match=r"baseline = 'x' is not a case of the file \(a\)"):
        load_cases(str(path))


def test_rounds_merge_to_medians_and_the_highest_peak():
    from mmseg_prompt.tooling.benchmark.report import merge_rounds
    rounds = [dict(method='cvpt', prompts=4, train_s=3.0, infer_s=1.0, peak_mib=10, gflops=2.0),
              dict(method='cvpt', prompts=4, train_s=1.0, infer_s=5.0, peak_mib=12, gflops=2.0),
              dict(method='cvpt', prompts=4, train_s=2.0, infer_s=2.0, peak_mib=11, gflops=2.0)]
    merged = merge_rounds(rounds)
    assert merged == dict(method='cvpt', prompts=4, train_s=2.0, infer_s=2.0, peak_mib=12,
                          gflops=2.0, train_s_rounds=[3.0, 1.0, 2.0],
                          infer_s_rounds=[1.0, 5.0, 2.0])


@pytest.mark.slow  # runs the benchmark tool in subprocesses
def test_count_ops_prints_the_kernel_launch_table(tmp_path):
    res = run(['--count-ops', '--model-kwargs', 'depth=4', 'embed_dim=64', 'num_heads=2',
               '--img', '32', '--batch', '1', '--methods', 'trunk', 'cvpt', '--prompts', '4',
               '--dtype', 'bf16', '--out', str(tmp_path)])
    data = json.loads((tmp_path / 'ops.json').read_text())
    rows = {(r['method'], r['prompts']): r for r in data['results']}
    assert set(rows) == {('trunk', 0), ('cvpt', 4)}
    trunk, cvpt = rows[('trunk', 0)], rows[('cvpt', 4)]
    extra = (cvpt['train_ops'] - trunk['train_ops']) / 4
    assert f'| CVPT, 4 (folded) | {cvpt["train_ops"]} | {extra:.1f} | {cvpt["train_copies"]} |' \
        in res.stdout  # a CPU's form: 2 heads x 4 prompts < 64
    assert f'| frozen trunk | {trunk["train_ops"]} | - |' in res.stdout
    assert trunk['train_counts']['_to_copy'] > 0  # bf16 autocast re-casts the frozen weights
    assert sum(trunk['train_counts'].values()) == trunk['train_ops']


@pytest.mark.slow  # runs the benchmark tool in subprocesses
def test_count_ops_meets_the_launch_targets_with_a_bfloat16_trunk_in_a_gpus_forms(tmp_path):
    """docs/cost.md's targets, counted on the CPU with the forms a GPU runs (--device cuda):
    per prompted block and training step at most 12 more operators than the frozen trunk for
    VPT-Deep and 20 for CVPT, at 10 and at 200 prompts; the bfloat16 trunk copies fewer."""
    res = run(['--count-ops', '--device', 'cuda', '--trunk-dtype', 'bfloat16', '--model-kwargs',
               'depth=4', 'embed_dim=64', 'num_heads=2', '--img', '32', '--batch', '2',
               '--prompts', '10', '200', '--dtype', 'bf16', '--out', str(tmp_path)])
    assert 'forms of cuda, trunk stored in bfloat16' in res.stdout
    rows = {(r['method'], r['prompts']): r
            for r in json.loads((tmp_path / 'ops.json').read_text())['results']}
    trunk = rows.pop(('trunk', 0))
    assert set(rows) == {('vpt', 10), ('vpt', 200), ('cvpt', 10), ('cvpt', 200)}
    for (method, m), r in rows.items():
        extra = (r['train_ops'] - trunk['train_ops']) / r['depth']
        assert extra <= dict(vpt=12, cvpt=20)[method], (method, m, extra, r['train_counts'])
        if method == 'cvpt':
            assert r['form'] == 'plain' and f'| CVPT, {m} (plain) |' in res.stdout
    # no frozen weight is cast: what is left are autocast's casts of activations (6 per block:
    # the two LayerNorm outputs into their Linear layers, and four gradients)
    assert trunk['train_counts']['_to_copy'] <= 7 * trunk['depth']
