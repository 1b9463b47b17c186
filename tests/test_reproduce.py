"""tools/reproduce.py end to end on CPU (train, both tests, the three result files, a resume
after a kill, stages skipped when done) and the slurm launchers' command lines."""
import json
import os
import os.path as osp
import signal
import stat
import subprocess
import sys
import time

import pytest
import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
EXAMPLES = [osp.join(REPO, 'configs', 'example', f) for f in
            ('cvpt_tiny_ade20k_synthetic.py', 'davpt_tiny_ade20k_synthetic.py')]


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    root = tmp_path_factory.mktemp('reproduce')
    data_root = make_synthetic_ade20k(root / 'ade', num_train=6, num_val=1, seed=1)
    save_random_trunk(Config.fromfile(EXAMPLES[0]).model.backbone, root / 'trunk.pth', seed=0)
    options = [f'model.backbone.pretrained={root / "trunk.pth"}', 'train_cfg.max_iters=4',
               'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2',
               'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2'] + [
        f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]
    return root, options


def reproduce_cmd(work, options):
    return [sys.executable, osp.join(REPO, 'tools', 'reproduce.py'), *EXAMPLES,
            '--launcher', 'none', '--work-dir', str(work), '--cfg-options', *options]


@pytest.mark.slow  # trains and tests two configs through the tools, three times
def test_reproduce_trains_tests_writes_resumes_after_a_kill_and_skips_what_is_done(tiny_setup):
    root, options = tiny_setup
    work = root / 'work'
    first = osp.join(work, 'cvpt_tiny_ade20k_synthetic', 'train')
    proc = subprocess.Popen(reproduce_cmd(work, options), cwd=root, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not osp.isfile(osp.join(first, 'iter_2.pth')) and time.time() < deadline:
        assert proc.poll() is None, 'reproduce.py ended before its first checkpoint'
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job, mid-training, as a cluster would
    proc.wait()
    assert not osp.isfile(osp.join(first, 'iter_4.pth'))

    res = subprocess.run(reproduce_cmd(work, options), cwd=root, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f'resuming the interrupted training in {first}' in res.stdout
    assert 'Iter(train) [4/4]' in res.stdout
    records = json.load(open(work / 'results.json'))
    assert [r['name'] for r in records] == ['cvpt_tiny_ade20k_synthetic',
                                            'davpt_tiny_ade20k_synthetic']
    for r in records:
        assert osp.isfile(r['checkpoint']) and r['checkpoint'].endswith('iter_4.pth')
        assert 0 <= r['single_scale'] <= 100 and 0 <= r['multi_scale'] <= 100
        assert r['train_seconds'] > 0 and r['paper'] == dict(
            single_scale=None, multi_scale=None, unstated_scale=None, source='')
        # each number is the one tools/test.py wrote in the stage's work dir
        for style, key in (('ss', 'single_scale'), ('ms', 'multi_scale')):
            from mmseg_prompt.utils.run_records import test_metrics
            assert test_metrics(osp.join(work, r['name'], f'test_{style}'))['mIoU'] == r[key]
    # the multi-scale test is --tta --tta-style 0.x (test_pipeline_e2e.py checks 1.x)
    from test_pipeline_e2e import check_tta_run
    check_tta_run(work / 'cvpt_tiny_ade20k_synthetic' / 'test_ms', '0.x')
    table = open(work / 'results.md').read()
    assert f'| {records[0]["single_scale"]:.2f} |' in table
    meta = yaml.safe_load(open(work / 'metafile.yml'))
    check_metafile(meta, records)

    again = subprocess.run(reproduce_cmd(work, options), cwd=root, capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count('is there') == 2 and '$ ' not in again.stdout
    assert json.load(open(work / 'results.json')) == records


def check_metafile(meta, records):
    """mim's model-index reader where installed, else the schema mmseg's metafiles follow."""
    assert set(meta) == {'Collections', 'Models'}
    names = {c['Name'] for c in meta['Collections']}
    assert len(meta['Models']) == len(records)
    for model, r in zip(meta['Models'], records):
        assert model['Name'] == r['name'] and model['In Collection'] in names
        assert osp.isfile(model['Config']) and osp.isfile(model['Weights'])
        (result,) = model['Results']
        assert result['Task'] == 'Semantic Segmentation' and result['Dataset'] == 'ADE20K'
        assert result['Metrics'] == {'mIoU': r['single_scale'],
                                     'mIoU(ms+flip)': r['multi_scale']}


def test_each_named_table_maps_its_rows_to_existing_configs():
    """--table names map the papers' rows to configs that exist, with the numbers quoted."""
    sys.path.insert(0, osp.join(REPO, 'tools'))
    try:
        import reproduce
    finally:
        sys.path.pop(0)
    assert set(reproduce.TABLES) == {'cvpt_ade20k', 'davpt_ade20k', 'davpt_pascal_context'}
    for rows in reproduce.TABLES.values():
        for row in rows:
            assert osp.isfile(osp.join(REPO, row.config)), row.config
    cvpt = {r.method: (r.single_scale, r.multi_scale) for r in reproduce.TABLES['cvpt_ade20k']}
    assert cvpt['CVPT, 200 prompts'] == (45.66, 47.92) and cvpt['VPT-Deep'] == (42.11, 44.06)
    assert cvpt['BitFit'] == (43.40, 45.33)
    pc = {r.method: r.unstated_scale for r in reproduce.TABLES['davpt_pascal_context']}
    assert pc['DA-VPT+'] == 50.40 and pc['VPT-Deep'] == 49.51
    res = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'reproduce.py'), '--table',
                          'nope'], capture_output=True, text=True)
    assert res.returncode == 2 and 'cvpt_ade20k' in res.stderr


@pytest.mark.parametrize('stage', ['train', 'test'])
def test_slurm_launchers_start_one_task_per_gpu_with_the_slurm_launcher(stage, tmp_path):
    """tools/slurm_{train,test}.sh, with a stand-in `srun` that records what it was asked:
    the partition, job name, GPUs and GPUs per node as tasks, and our tool with
    --launcher slurm and the flags passed through."""
    fake = tmp_path / 'srun'
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_RECORD"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}', GPUS='16',
               SRUN_RECORD=str(tmp_path / 'args'))
    args = ['part1', 'job1', 'cfg.py'] + (['ckpt.pth'] if stage == 'test' else []) + \
        ['--work-dir', 'w d']
    res = subprocess.run(['bash', osp.join(REPO, 'tools', f'slurm_{stage}.sh')] + args,
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = open(tmp_path / 'args').read().splitlines()
    assert got[:7] == ['-p', 'part1', '--job-name=job1', '--gres=gpu:8', '--ntasks=16',
                       '--ntasks-per-node=8', '--cpus-per-task=5']
    tool = got.index(osp.join(REPO, 'tools', f'{stage}.py'))
    expected = ['cfg.py'] + (['ckpt.pth'] if stage == 'test' else []) + \
        ['--launcher', 'slurm'] + (['--cfg-options', 'default_hooks.stop_signal.signals='
                                    '[SIGTERM,SIGUSR1]'] if stage == 'train' else []) + \
        ['--work-dir', 'w d']
    # training: slurm's signal 300 s ahead of the time limit, and the hook listening to it
    assert ('--signal=USR1@300' in got) == (stage == 'train')
    assert got[tool - 2:tool] == ['python', '-u']
    assert got[tool + 1:] == expected
