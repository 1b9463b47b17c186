"""A checkpoint on the cluster's stop signal (StopSignalHook): tools/train.py SIGTERM'd mid-run
(the whole job, DataLoader workers included, and again in the middle of the checkpoint write)
saves, exits with 75 and resumes to the weights of a run never stopped; two gloo ranks stop at the
same iteration when one gets the signal; outside training a signal does what it did without the
hook; workers outlive a job-wide signal and still end with their process; tools/reproduce.py
passes the stop on. CPU, the example config on a tiny trunk."""
import multiprocessing
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CVPT = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')
ENV = dict(os.environ, PYTHONHASHSEED='0', PYTHONPATH=REPO)
STOPPED = 75  # the exit status of a stopped run (docs/user_guides/train_test.md)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    root = tmp_path_factory.mktemp('stop')
    data_root = make_synthetic_ade20k(root / 'ade', num_train=4, num_val=1, seed=5)
    save_random_trunk(Config.fromfile(CVPT).model.backbone, root / 'trunk.pth', seed=0)
    # two loader workers (the config's): a job-wide signal reaches them too
    opts = [f'model.backbone.pretrained={root / "trunk.pth"}', 'train_dataloader.batch_size=2',
            'default_hooks.logger.interval=1', 'train_cfg.val_interval=1000'] + [
        f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]
    return dict(root=root, opts=opts)


def train_cmd(toy, work, iters, *extra):
    return [sys.executable, f'{REPO}/tools/train.py', CVPT, '--work-dir', str(work), *extra,
            '--cfg-options', *toy['opts'], f'train_cfg.max_iters={iters}']


def tuned(ckpt):
    return torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']


def checkpoints(work):
    return sorted(p for p in os.listdir(work) if p.endswith('.pth') or '.tmp' in p)


# tools/train.py with one change: the checkpoint's temporary file is written in two halves, and
# between them the whole job gets SIGTERM again, from another process (as slurm sends it)
SIGNAL_DURING_SAVE = r'''
import os, runpy, subprocess, sys
from mmseg_prompt.utils import atomic_checkpoint

class SignalledMidWrite:
    def __init__(self, path, mode):
        self.f = open(path, mode)
    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        subprocess.run(['kill', '-TERM', '--', f'-{os.getpgrp()}'], start_new_session=True)
        print('SIGTERM to the job in the middle of the checkpoint write', flush=True)
        self.f.write(data[len(data) // 2:])
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()

atomic_checkpoint.open = lambda path, mode: (SignalledMidWrite(path, mode) if '.pth.tmp' in path
                                             else open(path, mode))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.mark.slow  # three trainings through tools/train.py
def test_sigterm_mid_run_saves_and_resumes_to_the_weights_of_a_run_never_stopped(toy, tmp_path):
    ref, work = tmp_path / 'ref', tmp_path / 'work'
    res = subprocess.run(train_cmd(toy, ref, 4), cwd=REPO, env=ENV, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]  # the run never stopped

    cmd = train_cmd(toy, work, 4)
    proc = subprocess.Popen([sys.executable, '-c', SIGNAL_DURING_SAVE] + cmd[1:], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: "the job"
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if 'Iter(train) [1/4]' in line:
            os.killpg(proc.pid, signal.SIGTERM)  # the main process and its loader workers
    log = ''.join(lines)
    assert proc.wait(timeout=60) == STOPPED, log[-3000:]
    stop = re.search(r'SIGTERM on rank 0: saving a checkpoint at iteration (\d) and stopping',
                     log)
    assert stop, log[-3000:]
    step = int(stop[1])
    assert 1 <= step < 4 and f'Iter(train) [{step + 1}/4]' not in log
    assert 'SIGTERM to the job in the middle of the checkpoint write' in log
    assert f'stopped at iteration {step} of 4: {work}/iter_{step}.pth saved' in log
    assert 'DataLoader worker' not in log and 'Traceback' not in log
    # the checkpoint --resume finds, complete, and nothing half-written beside it
    from mmseg_prompt.utils.checkpoint_files import check_checkpoint_file, last_checkpoint
    assert last_checkpoint(str(work)) == f'{work}/iter_{step}.pth'
    assert checkpoints(work) == [f'iter_{step}.pth']
    check_checkpoint_file(f'{work}/iter_{step}.pth')

    res = subprocess.run(train_cmd(toy, work, 4, '--resume'), cwd=REPO, env=ENV,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert f'resumed epoch: 0, iter: {step}' in res.stdout and 'Iter(train) [4/4]' in res.stdout
    a, b = tuned(ref / 'iter_4.pth'), tuned(work / 'iter_4.pth')
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two gloo processes through tools/train.py
def test_two_gloo_ranks_stop_at_the_same_iteration_when_one_gets_the_signal(toy, tmp_path):
    port, procs, logs = free_port(), [], []
    for rank in (0, 1):
        env = dict(ENV, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
                   MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES='')
        logs.append(tmp_path / f'rank{rank}.log')
        procs.append(subprocess.Popen(
            train_cmd(toy, tmp_path / 'work', 6, '--launcher', 'pytorch'), cwd=REPO, env=env,
            stdout=open(logs[-1], 'w'), stderr=subprocess.STDOUT, start_new_session=True))
    try:
        deadline = time.time() + 300
        while 'Iter(train) [1/6]' not in logs[0].read_text():
            assert time.time() < deadline and all(p.poll() is None for p in procs), \
                logs[0].read_text()[-3000:] + logs[1].read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(procs[1].pid, signal.SIGTERM)  # rank 1 only (and its loader workers)
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    out = logs[0].read_text()
    assert codes == [STOPPED, STOPPED], out[-3000:] + logs[1].read_text()[-3000:]
    stop = re.search(r'SIGTERM on rank 1: saving a checkpoint at iteration (\d) and stopping',
                     out)
    assert stop, out[-3000:]
    step = int(stop[1])
    assert 1 <= step < 6 and f'Iter(train) [{step + 1}/6]' not in out
    # both ranks reached the end of training with the same weights: the same iteration
    assert 'tuned weights identical on all 2 ranks' in out
    assert checkpoints(tmp_path / 'work') == [f'iter_{step}.pth']  # one, written by rank 0


def test_outside_training_a_signal_does_what_it_did_without_the_hook():
    from mmseg_prompt.engine import StopSignalHook
    calls = []

    def before(signum, frame):
        calls.append(signum)
    previous = signal.signal(signal.SIGUSR2, before)
    try:
        hook = StopSignalHook(signals=['USR2'])
        assert signal.getsignal(signal.SIGUSR2) is not before
        os.kill(os.getpid(), signal.SIGUSR2)
        assert calls == [signal.SIGUSR2]  # passed on: the run has not started
        hook.after_run(None)  # a run that ended without a stop puts the handler back
        assert signal.getsignal(signal.SIGUSR2) is before
    finally:
        signal.signal(signal.SIGUSR2, previous)
    for bad in ('SIGKILL', 'NOPE'):
        with pytest.raises(ValueError, match=f"'{bad}' is not a signal a process can catch"):
            StopSignalHook(signals=['SIGTERM', bad])


class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):
        time.sleep(0.02)
        return i


def test_loader_workers_outlive_a_job_wide_signal_and_end_when_their_process_ends_them():
    """torch's workers die on a SIGTERM their main process did not send, and the main process
    fails at its next batch. Forked under the hook they ignore it and deliver every batch; the
    main process's own SIGTERM (multiprocessing's terminate, at exit) still ends them."""
    from torch.utils.data import DataLoader

    from mmseg_prompt.engine import StopSignalHook
    previous = signal.getsignal(signal.SIGTERM)
    before = set(multiprocessing.active_children())
    hook = StopSignalHook()  # built before the loader forks, as in a Runner
    try:
        batches = iter(DataLoader(Slow(), num_workers=2))
        assert int(next(batches)) == 0
        workers = [p for p in multiprocessing.active_children() if p not in before]
        assert len(workers) == 2
        subprocess.run(['kill', '-TERM'] + [str(w.pid) for w in workers], check=True)
        assert [int(next(batches)) for _ in range(20)] == list(range(1, 21))
        for w in workers:
            w.terminate()  # from the parent
        for w in workers:
            w.join(timeout=30)
            assert w.exitcode == 0
        del batches
    finally:
        hook.after_run(None)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_reproduce_passes_a_stop_on_and_outlives_the_stage_on_sigterm(tmp_path, capsys):
    """tools/reproduce.py: a training stage that exits with 75 (stopped after its checkpoint)
    ends the tool with 75 and the advice to submit it again; SIGTERM to the tool while a stage
    runs waits for the stage, then ends with 75 too; a failure stays a failure."""
    sys.path.insert(0, osp.join(REPO, 'tools'))
    try:
        import reproduce
    finally:
        sys.path.pop(0)
    args = reproduce.parse_args(['x.py', '--launcher', 'none'])
    caught = []
    net = signal.signal(signal.SIGTERM, lambda s, f: caught.append(s))  # were run_stage to fail
    try:
        with pytest.raises(SystemExit) as stop:
            reproduce.run_stage(args, [sys.executable, '-c', 'import sys; sys.exit(75)'],
                                str(tmp_path / 'a.log'))
        assert stop.value.code == STOPPED
        assert 'stopped by a signal after saving a checkpoint: submit the same command again' \
            in capsys.readouterr().err
        stage = ('import os, signal, time; os.kill(os.getppid(), signal.SIGTERM); '
                 'time.sleep(1); print("stage done", flush=True)')
        with pytest.raises(SystemExit) as stop:
            reproduce.run_stage(args, [sys.executable, '-c', stage], str(tmp_path / 'b.log'))
        assert stop.value.code == STOPPED and 'stage done' in open(tmp_path / 'b.log').read()
        assert 'done, and this job got SIGTERM' in capsys.readouterr().err
        with pytest.raises(SystemExit) as failed:
            reproduce.run_stage(args, [sys.executable, '-c', 'import sys; sys.exit(3)'],
                                str(tmp_path / 'c.log'))
        assert 'failed (exit 3)' in str(failed.value.code)
        assert caught == []
    finally:
        signal.signal(signal.SIGTERM, net)
