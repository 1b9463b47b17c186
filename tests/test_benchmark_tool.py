"""The cost benchmark runs end to end on a tiny input and reports every column (no timing is
checked here: speed targets are read from the tool's table, never asserted in tests)."""
import json
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_benchmark_writes_table_json_and_plot(tmp_path):
    res = subprocess.run(
        [sys.executable, f'{REPO}/tools/analysis/benchmark_prompts.py', '--img', '32',
         '--batch', '1', '--prompts', '1', '4', '--warmup', '0', '--repeats', '1',
         '--out', str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert '| CVPT | 4 |' in res.stdout and '| VPT-Deep | 1 |' in res.stdout
    data = json.loads((tmp_path / 'results.json').read_text())
    rows = {(r['method'], r['prompts']): r for r in data['results']}
    assert set(rows) == {('trunk', 0), ('vpt', 1), ('vpt', 4), ('cvpt', 1), ('cvpt', 4)}
    assert 'train_s' not in rows[('trunk', 0)] and rows[('cvpt', 4)]['train_s'] > 0
    for r in rows.values():
        assert r['infer_s'] > 0 and r['peak_mib'] > 0
        # attention is counted (through the added handle), not left out as unsupported
        assert 'aten::scaled_dot_product_attention' not in r['unsupported_ops']
    # more prompts, more FLOPs; the prompts are what the methods tune
    assert rows[('vpt', 4)]['gflops'] > rows[('vpt', 1)]['gflops'] > rows[('trunk', 0)]['gflops']
    assert rows[('cvpt', 4)]['gflops'] > rows[('cvpt', 1)]['gflops'] > rows[('trunk', 0)]['gflops']
    assert rows[('cvpt', 4)]['tuned_params'] == 12 * 4 * 768
    assert (tmp_path / 'cost_vs_prompts.png').stat().st_size > 10_000
