"""The cost benchmark runs end to end on a tiny input and reports every column (no timing is
checked here: speed targets are read from the tool's table, never asserted in tests)."""
import json
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.mark.slow  # runs the benchmark tool in subprocesses
def test_benchmark_writes_table_json_and_plot(tmp_path):
    res = subprocess.run(
        [sys.executable, f'{REPO}/tools/analysis/benchmark_prompts.py', '--img', '32',
         '--batch', '1', '--prompts', '1', '4', '--warmup', '0', '--repeats', '1', '--rounds', '2',
         '--out', str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert '| CVPT | 4 |' in res.stdout and '| VPT-Deep | 1 |' in res.stdout
    data = json.loads((tmp_path / 'results.json').read_text())
    rows = {(r['method'], r['prompts']): r for r in data['results']}
    assert set(rows) == {('trunk', 0), ('vpt', 1), ('vpt', 4), ('cvpt', 1), ('cvpt', 4)}
    # the frozen trunk's step back-propagates through every block (the floor of prompt tuning)
    assert rows[('trunk', 0)]['train_s'] > 0 and rows[('cvpt', 4)]['train_s'] > 0
    # ... so its backward counts about as much as its forward (input gradients, no weight ones)
    assert rows[('trunk', 0)]['train_gflops'] > 1.9 * rows[('trunk', 0)]['gflops']
    assert 'head_only_s' not in rows[('trunk', 0)]  # no head here: nothing else to time
    assert len(rows[('cvpt', 4)]['train_s_rounds']) == 2  # two interleaved rounds, merged
    assert 'CVPT-4: train' in res.stdout and 'x VPT-Deep-1' in res.stdout
    assert "x the frozen trunk's forward + backward" in res.stdout
    for r in rows.values():
        assert r['infer_s'] > 0 and r['peak_mib'] > 0
        # attention is counted (through the added handle), not left out as unsupported
        assert 'aten::scaled_dot_product_attention' not in r['unsupported_ops']
    # more prompts, more FLOPs; the prompts are what the methods tune
    assert rows[('vpt', 4)]['gflops'] > rows[('vpt', 1)]['gflops'] > rows[('trunk', 0)]['gflops']
    assert rows[('cvpt', 4)]['gflops'] > rows[('cvpt', 1)]['gflops'] > rows[('trunk', 0)]['gflops']
    assert rows[('cvpt', 4)]['tuned_params'] == 12 * 4 * 768
    for key in rows:
        assert rows[key]['train_gflops'] > rows[key]['gflops']  # forward and backward
    assert (tmp_path / 'cost_vs_prompts.png').stat().st_size > 10_000
    # 12 heads x 4 prompts < 768: the folded cross-attention ran
    assert rows[('cvpt', 4)]['cross_form'] == 'folded'
    # a saved run re-prints the same table
    (tmp_path / 'cost_vs_prompts.png').unlink()
    again = subprocess.run(
        [sys.executable, f'{REPO}/tools/analysis/benchmark_prompts.py', '--report',
         str(tmp_path / 'results.json')], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    table = [ln for ln in res.stdout.splitlines() if ln.startswith('|')]
    assert len(table) == 7 and table == [ln for ln in again.stdout.splitlines()
                                         if ln.startswith('|')]
    assert (tmp_path / 'cost_vs_prompts.png').exists()


@pytest.mark.slow  # runs the benchmark tool in subprocesses
def test_compiled_sweep_and_its_comparison_with_eager(tmp_path):
    """--compile runs every case through torch.compile'd modules (aot_eager here, to keep the
    test short); --report EAGER COMPILED prints each case's speed-up."""
    common = [sys.executable, f'{REPO}/tools/analysis/benchmark_prompts.py', '--img', '32',
              '--model', 'vit_tiny_patch16_224',
              '--batch', '2', '--methods', 'trunk', 'cvpt', '--prompts', '2', '--warmup', '1',
              '--repeats', '1', '--head', 'upernet']
    runs = {}
    for name, extra in (('eager', ['--no-flops']),
                        ('compiled', ['--compile', '--compile-backend', 'aot_eager'])):
        res = subprocess.run(common + extra + ['--out', str(tmp_path / name)],
                             capture_output=True, text=True, cwd=REPO)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[name] = json.loads((tmp_path / name / 'results.json').read_text())
        assert 'gflops' not in runs[name]['results'][0]  # FLOPs are counted in eager runs only
    assert runs['compiled']['meta']['compile'] == 'aot_eager'
    assert not runs['eager']['meta']['compile']
    trunk = runs['eager']['results'][0]
    assert trunk['method'] == 'trunk' and trunk['head_only_s'] > 0  # the head trains too
    both = subprocess.run([sys.executable, f'{REPO}/tools/analysis/benchmark_prompts.py',
                           '--report', str(tmp_path / 'eager' / 'results.json'),
                           str(tmp_path / 'compiled' / 'results.json')],
                          capture_output=True, text=True, cwd=REPO)
    assert both.returncode == 0, both.stderr[-3000:]
    rows = [ln for ln in both.stdout.splitlines() if ln.startswith('| CVPT | 2 |')]
    assert len(rows) == 3  # the eager table, the compiled table, the comparison
    assert rows[-1].count('x |') == 2  # speed-ups of the training step and of inference


def test_training_flops_count_cpu_attention_forward_and_backward():
    """Attention alone: Q K^T and A V forward (2 B H N M d multiply-adds); the flash backward
    recomputes Q K^T, then dV = A^T dO, dA = dO V^T, dQ = dS K, dK = dS^T Q (5 B H N M d).
    torch's counter skips the CPU kernels unless the tool's formulas are given."""
    import importlib.util
    import torch
    import torch.nn.functional as F
    spec = importlib.util.spec_from_file_location(
        'benchmark_prompts', f'{REPO}/tools/analysis/benchmark_prompts.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    B, H, N, M, d = 2, 3, 10, 7, 8
    q = torch.randn(B, H, N, d, requires_grad=True)
    k = torch.randn(B, H, M, d, requires_grad=True)
    v = torch.randn(B, H, M, d, requires_grad=True)
    macs = tool._train_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum(), [q, k, v])
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


@pytest.mark.slow  # runs the benchmark tool in subprocesses
def test_count_ops_prints_the_kernel_launch_table(tmp_path):
    res = subprocess.run(
        [sys.executable, f'{REPO}/tools/analysis/benchmark_prompts.py', '--count-ops',
         '--model-kwargs', 'depth=4', 'embed_dim=64', 'num_heads=2', '--img', '32', '--batch',
         '1', '--prompts', '4', '--dtype', 'bf16', '--out', str(tmp_path)],
        capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / 'ops.json').read_text())
    rows = {(r['method'], r['prompts']): r for r in data['results']}
    assert set(rows) == {('trunk', 0), ('vpt', 4), ('cvpt', 4)}
    trunk, cvpt = rows[('trunk', 0)], rows[('cvpt', 4)]
    extra = (cvpt['train_ops'] - trunk['train_ops']) / 4
    assert f'| CVPT, 4 (folded) | {cvpt["train_ops"]} | {extra:.1f} | {cvpt["train_copies"]} |' \
        in res.stdout  # a CPU's form: 2 heads x 4 prompts < 64
    assert trunk['train_counts']['_to_copy'] > 0  # bf16 autocast re-casts the frozen weights
    assert sum(trunk['train_counts'].values()) == trunk['train_ops']


def test_count_ops_meets_the_launch_targets_with_a_bfloat16_trunk_in_a_gpus_forms(tmp_path):
    """docs/cost.md's targets, counted on the CPU with the forms a GPU runs (--device cuda):
    per prompted block and training step at most 12 more operators than the frozen trunk for
    VPT-Deep and 20 for CVPT, at 10 and at 200 prompts; the bfloat16 trunk copies fewer."""
    res = subprocess.run(
        [sys.executable, f'{REPO}/tools/analysis/benchmark_prompts.py', '--count-ops',
         '--device', 'cuda', '--trunk-dtype', 'bfloat16', '--model-kwargs', 'depth=4',
         'embed_dim=64', 'num_heads=2', '--img', '32', '--batch', '2', '--prompts', '10', '200',
         '--dtype', 'bf16', '--out', str(tmp_path)],
        capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'forms of cuda, trunk stored in bfloat16' in res.stdout
    rows = {(r['method'], r['prompts']): r
            for r in json.loads((tmp_path / 'ops.json').read_text())['results']}
    trunk = rows.pop(('trunk', 0))
    for (method, m), r in rows.items():
        extra = (r['train_ops'] - trunk['train_ops']) / r['depth']
        assert extra <= dict(vpt=12, cvpt=20)[method], (method, m, extra, r['train_counts'])
        if method == 'cvpt':
            assert r['form'] == 'plain' and f'| CVPT, {m} (plain) |' in res.stdout
    # no frozen weight is cast: what is left are autocast's casts of activations (6 per block:
    # the two LayerNorm outputs into their Linear layers, and four gradients)
    assert trunk['train_counts']['_to_copy'] <= 7 * trunk['depth']
