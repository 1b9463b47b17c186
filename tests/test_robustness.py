"""Training that survives faults: atomic checkpoints, exact resume, determinism, a trunk that
provably never changes, distributed runs, and bad input with clear messages. CPU, tiny trunks,
the synthetic ADE20K-layout data."""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CVPT = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')
DAVPT = osp.join(REPO, 'configs/example/davpt_tiny_ade20k_synthetic.py')
ENV = dict(os.environ, PYTHONHASHSEED='0')


def run(args, **kw):
    return subprocess.run([str(a) for a in args], cwd=REPO, capture_output=True, text=True,
                          env=ENV, **kw)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    root = tmp_path_factory.mktemp('robust')
    data_root = make_synthetic_ade20k(root / 'ade', num_train=8, num_val=1, seed=3)
    bb = Config.fromfile(CVPT).model.backbone
    save_random_trunk(bb, root / 'trunk.pth', seed=0)
    opts = [f'model.backbone.pretrained={root / "trunk.pth"}',
            'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1',
            'train_cfg.val_interval=1000'] + [
        f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]
    return dict(root=root, data_root=data_root, opts=opts)


def train(config, work, opts, *extra, iters):
    return run([sys.executable, f'{REPO}/tools/train.py', config, '--work-dir', work, *extra,
                '--cfg-options', *opts, f'train_cfg.max_iters={iters}'])


def tuned(ckpt):
    return torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope='module')
def cvpt_run(toy):
    """The CVPT example trained 2 iterations by tools/train.py, a checkpoint after each: the work
    dir (iter_1.pth, iter_2.pth, last_checkpoint) and the log. Tests change copies of it."""
    work = toy['root'] / 'cvpt_run'
    res = train(CVPT, work, toy['opts'] + ['default_hooks.checkpoint.interval=1',
                                         'default_hooks.checkpoint.max_keep_ckpts=3'], iters=2)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return dict(work=work, log=res.stdout)


def copy_run(src, dst):
    """A copy of the work dir ``src`` at ``dst``, its last_checkpoint naming the copy's file (the
    Runner records an absolute path)."""
    shutil.copytree(src, dst)
    last = open(dst / 'last_checkpoint').read().strip()
    (dst / 'last_checkpoint').write_text(str(dst / osp.basename(last)))
    return dst


# ---------------------------------------------------------------------------- checkpoints
ATOMIC = dict(backend='atomic_local')  # the configs' default_hooks.checkpoint.backend_args


class _HalfWrittenFile:
    """A file whose write stores half of the bytes, then calls ``then`` (a kill, a hang)."""

    def __init__(self, path, then):
        self.f, self.then = open(path, 'wb'), then

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        self.then()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_an_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    """mmengine's save_checkpoint, as the Runner calls it with the configs' backend_args."""
    from mmengine.runner.checkpoint import save_checkpoint

    from mmseg_prompt.utils import atomic_checkpoint
    path = str(tmp_path / 'iter_1.pth')
    save_checkpoint(dict(state_dict=dict(w=torch.ones(3))), path, backend_args=ATOMIC)

    def killed():
        raise KeyboardInterrupt('killed while writing')
    monkeypatch.setattr(atomic_checkpoint, 'open',
                        lambda p, mode: _HalfWrittenFile(p, killed), raising=False)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(dict(state_dict=dict(w=torch.zeros(3))), path, backend_args=ATOMIC)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(dict(state_dict=dict(w=torch.zeros(3))), str(tmp_path / 'iter_2.pth'),
                        backend_args=ATOMIC)
    assert sorted(os.listdir(tmp_path)) == ['iter_1.pth']  # no partial file, no temp file
    assert torch.equal(torch.load(path, weights_only=True)['state_dict']['w'], torch.ones(3))


def test_the_checkpoint_hook_writes_through_the_atomic_backend(tmp_path, monkeypatch):
    """What the atomic saves rely on in mmengine: the file backend is found by the name in
    ``backend_args`` (CheckpointHook's and save_checkpoint's lookup), and save_checkpoint hands
    the serialised bytes to that backend's ``put``. If mmengine changes either, this fails."""
    from mmengine.fileio import get_file_backend
    from mmengine.runner.checkpoint import save_checkpoint

    from mmseg_prompt.utils.atomic_checkpoint import AtomicLocalBackend
    assert isinstance(get_file_backend(str(tmp_path), backend_args=ATOMIC), AtomicLocalBackend)
    puts = []
    original = AtomicLocalBackend.put
    monkeypatch.setattr(AtomicLocalBackend, 'put',
                        lambda self, obj, fp: (puts.append(fp), original(self, obj, fp))[1])
    target = tmp_path / 'iter_1.pth'
    save_checkpoint(dict(state_dict=dict(w=torch.ones(2))), str(target), backend_args=ATOMIC)
    assert puts == [str(target)] and target.is_file()
    save_checkpoint(dict(state_dict=dict(w=torch.ones(2))), str(tmp_path / 'plain.pth'))
    assert puts == [str(target)]  # without the backend_args: mmengine's own local writes


KILLED_SAVE = """
import sys, time
import torch
from mmengine.runner.checkpoint import save_checkpoint
from mmseg_prompt.utils import atomic_checkpoint

class HalfThenHang:
    def __init__(self, path, mode):
        self.f = open(path, mode)
    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        print('half written', flush=True)
        time.sleep(600)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()

atomic_checkpoint.open = HalfThenHang
save_checkpoint(dict(state_dict=dict(w=torch.ones(4096))), sys.argv[1],
                backend_args=dict(backend='atomic_local'))
"""


@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_a_run_removes_the_temporaries_of_killed_saves_and_keeps_live_ones(toy, tmp_path):
    """A save SIGKILLed mid-write leaves ``iter_4.pth.tmp<pid>``; the next run deletes it and
    says so, and keeps a live process's temporary, another user's file and unrelated files."""
    from mmseg_prompt.utils.atomic_checkpoint import temporary_path
    work = tmp_path / 'work'
    work.mkdir()
    writer = subprocess.Popen([sys.executable, '-c', KILLED_SAVE, str(work / 'iter_4.pth')],
                              cwd=REPO, stdout=subprocess.PIPE, text=True, env=ENV)
    lines = (line.strip() for line in iter(writer.stdout.readline, ''))
    assert 'half written' in lines  # mmengine may log before it; EOF if the writer failed
    writer.kill()  # SIGKILL: no finally block runs
    writer.wait()
    dead = work / osp.basename(temporary_path('iter_4.pth', writer.pid))
    assert dead.stat().st_size > 0 and not (work / 'iter_4.pth').exists()
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
    try:
        live = work / f'iter_2.pth.tmp{sleeper.pid}'  # a save in progress elsewhere
        live.write_bytes(b'partial')
        others = work / f'iter_6.pth.tmp{writer.pid}'  # another user's, dead pid: kept
        if os.getuid() == 0:  # only root can make a file of another user
            others.write_bytes(b'partial')
            os.chown(others, 65534, 65534)
        unrelated = work / f'notes.txt.tmp{writer.pid}'
        unrelated.write_bytes(b'not a checkpoint')
        res = train(CVPT, work, toy['opts'], iters=1)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert not dead.exists()
        assert f'removed {dead.name} from {work}' in res.stdout
        assert live.exists() and unrelated.exists()
        assert others.exists() == (os.getuid() == 0)
        assert res.stdout.count('removed iter_') == 1
    finally:
        sleeper.kill()
        sleeper.wait()


# ---------------------------------------------------------------------------- resume, determinism
@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_exact_resume_and_determinism(toy, tmp_path):
    """DA-VPT+ (the example config: prompt dropout, bias deltas, metric losses, the mapping
    re-clustered every 2 iterations): 6 iterations straight, twice, and 3 + resume to 6, give
    the same tuned weights. The mapping is built before training, re-clustered, saved, and
    restored (not rebuilt) on resume."""
    opts = toy['opts'] + ['custom_hooks.0.interval=2', 'default_hooks.checkpoint.interval=3',
                          'default_hooks.checkpoint.max_keep_ckpts=3']
    a, b, c = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    for work, iters in ((a, 6), (c, 6), (b, 3)):
        res = train(DAVPT, work, opts, iters=iters)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    log = res.stdout  # b's first 3 iterations
    assert 'class-to-prompt mapping built' in log and 're-clustered (warm start)' in log
    assert 'loss_metric_patch: ' in log and 'loss_metric_cls: ' in log
    saved = tuned(b / 'iter_3.pth')
    assert (saved['class_to_prompt'] >= 0).all() and 'backbone.kv_bias.delta' in saved
    res = train(DAVPT, b, opts, '--resume', iters=6)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert 'class-to-prompt mapping restored from the checkpoint' in res.stdout
    assert 'class-to-prompt mapping built' not in res.stdout
    assert 'RNG states restored from the checkpoint' in res.stdout
    assert 'Iter(train) [6/6]' in res.stdout
    final_a = tuned(a / 'iter_6.pth')
    assert_same_state(final_a, tuned(c / 'iter_6.pth'))  # same seed, same config, twice
    assert_same_state(final_a, tuned(b / 'iter_6.pth'))  # interrupted at 3 and resumed
    # and the runs did train: the prompts moved
    assert not torch.equal(final_a['backbone.prompts.tokens.0'],
                           tuned(b / 'iter_3.pth')['backbone.prompts.tokens.0'])


# ---------------------------------------------------------------------------- the frozen trunk
@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_train_reports_an_unchanged_trunk(cvpt_run):
    assert 'frozen trunk unchanged by training' in cvpt_run['log']
    assert 'tuned weights: ' in cvpt_run['log']


def test_trunk_check_catches_a_changed_trunk(tiny_trunk_file):
    from mmseg.registry import MODELS

    from mmseg_prompt.engine import FrozenTrunkCheckHook
    path, _ = tiny_trunk_file
    from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME
    model = MODELS.build(dict(type='EncoderDecoder', backbone=dict(
        type='CVPTViT', model_name=TINY_NAME, img_size=64, model_kwargs=TINY_KWARGS,
        out_indices=(2,), pretrained=str(path)), decode_head=dict(
        type='FCNHead', in_channels=64, channels=8, num_convs=1, num_classes=3)))
    runner = type('R', (), dict(model=model))()
    hook = FrozenTrunkCheckHook()
    hook.before_train(runner)
    hook.after_train(runner)  # unchanged: passes
    with torch.no_grad():
        model.backbone.trunk.blocks[1].mlp.fc2.bias[0] += 1e-6
    with pytest.raises(RuntimeError, match='frozen trunk changed'):
        hook.after_train(runner)


# ---------------------------------------------------------------------------- distributed
@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_two_process_gloo_training(toy, tmp_path):
    # two CPU processes on gloo, also on a machine with one GPU (two NCCL ranks would need two)
    env = dict(ENV, PYTHON=sys.executable, PORT=str(29500 + os.getpid() % 1000),
               CUDA_VISIBLE_DEVICES='')
    res = subprocess.run(['bash', f'{REPO}/tools/dist_train.sh', CVPT, '2', '--work-dir',
                          str(tmp_path), '--cfg-options', *toy['opts'], 'train_cfg.max_iters=2',
                          'default_hooks.checkpoint.interval=2'],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert 'tuned weights identical on all 2 ranks' in out
    assert 'Iter(train) [2/2]' in out
    # one checkpoint, written once (by rank 0), complete
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) == ['iter_2.pth']
    assert not glob.glob(str(tmp_path / '*.tmp*'))
    assert 'backbone.prompts.tokens.0' in tuned(tmp_path / 'iter_2.pth')


# ---------------------------------------------------------------------------- bad input
def copy_data(toy, tmp_path):
    dst = tmp_path / 'ADEChallengeData2016'
    shutil.copytree(toy['data_root'], dst)
    return dst


def opts_for(toy, data_root):
    return [o for o in toy['opts'] if 'data_root' not in o] + [
        f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]


def first_image(data_root):
    return sorted(glob.glob(str(data_root / 'images/training/*.jpg')))[0]


@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_corrupt_image_names_the_file(toy, tmp_path):
    data = copy_data(toy, tmp_path)
    bad = first_image(data)
    with open(bad, 'wb') as f:
        f.write(b'this is not a jpeg')
    res = train(CVPT, tmp_path / 'w', opts_for(toy, data) + ['train_dataloader.num_workers=0'],
                iters=8)
    assert res.returncode != 0
    assert f'failed to load image: {bad}' in res.stderr


@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_image_without_annotation_is_named(toy, tmp_path):
    data = copy_data(toy, tmp_path)
    img = first_image(data)
    label = img.replace('images', 'annotations').replace('.jpg', '.png')
    os.remove(label)
    res = train(CVPT, tmp_path / 'w', opts_for(toy, data), iters=1)
    assert res.returncode != 0
    assert '1 of 8 images have no label file' in res.stderr and osp.basename(label) in res.stderr


@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_label_outside_the_classes_is_named(toy, tmp_path):
    data = copy_data(toy, tmp_path)
    label = sorted(glob.glob(str(data / 'annotations/training/*.png')))[0]
    seg = cv2.imread(label, cv2.IMREAD_UNCHANGED)
    seg[5, 5] = 200  # 199 after reduce_zero_label, >= 150 classes
    cv2.imwrite(label, seg)
    res = train(CVPT, tmp_path / 'w', opts_for(toy, data) + ['train_dataloader.num_workers=0',
                                                             'train_dataloader.batch_size=8'],
                iters=1)
    assert res.returncode != 0
    assert label in res.stderr and '199' in res.stderr


@pytest.mark.parametrize('key,value', [('model.backbone.img_size', '120'),
                                       ('model.test_cfg.crop_size', '(100,100)'),
                                       ('model.data_preprocessor.size', '(130,130)')])
@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_sizes_that_do_not_fit_the_patch_are_refused(toy, tmp_path, key, value):
    res = train(CVPT, tmp_path, toy['opts'] + [f'{key}={value}'], iters=1)
    assert res.returncode != 0
    assert f'{key} = ' in res.stderr and 'patch size 16' in res.stderr


@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_nan_loss_stops_at_its_iteration_and_keeps_the_last_good_checkpoint(toy, cvpt_run,
                                                                           tmp_path):
    work = copy_run(cvpt_run['work'], tmp_path / 'work')  # trained 2 iterations
    good = tuned(work / 'iter_2.pth')
    res = train(CVPT, work, toy['opts'] + ['default_hooks.checkpoint.interval=1',
                                           'default_hooks.checkpoint.max_keep_ckpts=3',
                                           'model.decode_head.loss_decode.loss_weight=nan'],
                '--resume', iters=4)
    assert res.returncode != 0
    assert 'non-finite loss at iteration 3' in res.stderr
    assert 'iter_2.pth' in res.stderr
    assert sorted(p for p in os.listdir(work) if p.endswith('.pth')) == ['iter_1.pth',
                                                                         'iter_2.pth']
    assert_same_state(good, tuned(work / 'iter_2.pth'))


@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_grayscale_and_rgba_images_just_work(toy, tmp_path):
    data = copy_data(toy, tmp_path)
    images = sorted(glob.glob(str(data / 'images/training/*.jpg')))
    gray = cv2.imread(images[0], cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(images[0], gray)  # a one-channel JPEG
    bgr = cv2.imread(images[1])
    rgba = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert cv2.imencode('.png', rgba)[0]
    with open(images[1], 'wb') as f:  # a 4-channel PNG under the .jpg name the layout wants
        f.write(cv2.imencode('.png', rgba)[1].tobytes())
    assert cv2.imread(images[0], cv2.IMREAD_UNCHANGED).ndim == 2
    assert cv2.imread(images[1], cv2.IMREAD_UNCHANGED).shape[2] == 4
    res = train(CVPT, tmp_path / 'w', opts_for(toy, data) + ['train_dataloader.batch_size=8'],
                iters=2)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'Iter(train) [2/2]' in res.stdout


def test_rng_states_come_back_from_a_checkpoint_loaded_onto_the_device(device):
    """mmengine's resume loads a checkpoint with map_location='default' (the GPU where there is
    one); torch only takes CPU byte tensors as RNG states. The restored generators draw the same
    numbers as when the checkpoint was saved."""
    import random
    from types import SimpleNamespace

    from mmseg_prompt.engine.training_checks import RNGStateHook
    hook, ckpt = RNGStateHook(), {}
    torch.manual_seed(3)
    hook.before_save_checkpoint(None, ckpt)
    expected = (torch.rand(4), torch.rand(4, device=device), random.random(), np.random.rand())
    torch.manual_seed(99), random.seed(99), np.random.seed(99)
    state = ckpt['rng_state']
    state['torch'] = state['torch'].to(device)  # where map_location puts tensors
    if 'cuda' in state:
        state['cuda'] = [s.to(device) for s in state['cuda']]
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), ckpt)
    got = (torch.rand(4), torch.rand(4, device=device), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert got[2:] == expected[2:]


def cut_short(src, dst, keep=0.6):
    """A copy of ``src`` with only the first ``keep`` of its bytes, as a copy cut short."""
    data = open(src, 'rb').read()
    open(dst, 'wb').write(data[:int(len(data) * keep)])


def test_damaged_checkpoints_are_named_with_their_size_and_the_fix(toy, cvpt_run, tmp_path):
    """tools/test.py on a truncated checkpoint, tools/train.py --resume when the last
    checkpoint is damaged (the intact ones listed with the command; nothing deleted), and a
    trunk file that is not a checkpoint; the intact files pass the same checks."""
    from mmseg_prompt.utils.checkpoint_files import check_checkpoint_file
    work = copy_run(cvpt_run['work'], tmp_path / 'work')  # a checkpoint after each of 2 iters
    good, last = work / 'iter_1.pth', work / 'iter_2.pth'
    check_checkpoint_file(str(good))  # the right input passes
    cut_short(last, tmp_path / 'copy.pth')
    shutil.copy(tmp_path / 'copy.pth', last)  # the last checkpoint, cut short
    size = os.path.getsize(last)
    res = run([sys.executable, f'{REPO}/tools/test.py', CVPT, last, '--work-dir',
               tmp_path / 'test', '--cfg-options', *toy['opts']])
    assert res.returncode != 0
    assert f'checkpoint {last} is truncated or corrupt ({size:,} bytes' in res.stderr
    assert 'central directory' not in res.stderr.splitlines()[-1]

    assert open(work / 'last_checkpoint').read().strip().endswith('iter_2.pth')
    res = train(CVPT, work, toy['opts'], '--resume', iters=3)
    assert res.returncode != 0
    message = res.stderr.strip().splitlines()[-1]
    assert f'the checkpoint to resume from {last} is truncated or corrupt' in message
    assert f'It is the one {work}/last_checkpoint names.' in message
    assert f'Intact checkpoints in {work}: iter_1.pth' in message
    assert f'--resume {good}' in message and 'nothing was deleted' in message
    assert good.exists() and last.exists()
    kept = tmp_path / 'kept.pth'
    shutil.copy(good, kept)
    res = train(CVPT, work, toy['opts'], '--resume', good, iters=3)  # the command it gives
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'Iter(train) [3/3]' in res.stdout

    text = tmp_path / 'trunk.pth'
    text.write_text('this is not a checkpoint\n')
    res = run([sys.executable, f'{REPO}/tools/test.py', CVPT, kept, '--work-dir',
               tmp_path / 'test2', '--cfg-options', *toy['opts'],
               f'model.backbone.pretrained={text}'])
    assert res.returncode != 0
    assert f'pretrained trunk file {text} is not a PyTorch checkpoint (25 bytes' in res.stderr
    assert 'weights_only' not in res.stderr.strip().splitlines()[-1]


def first_label(data_root):
    return sorted(glob.glob(str(data_root / 'annotations/training/*.png')))[0]


@pytest.mark.slow  # trains through tools/train.py in subprocesses
def test_16_bit_and_rgb_label_files_are_refused_whatever_the_pipeline(toy, tmp_path):
    """A 16-bit label PNG holding class 300 is refused with its bit depth and values, through
    the shipped pipeline (CheckSegLabels) and through a user's own pipeline without it (the
    schedule bases' hook reads each file's header); so is an RGB label under the user's own
    pipeline. The same data with the 8-bit label as it was trains."""
    own = tmp_path / 'own_pipeline.py'
    own.write_text(f"""_base_ = ['{CVPT}']
train_pipeline = [dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='RandomCrop', crop_size=(128, 128)),
                  dict(type='PackSegInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
""")
    data = copy_data(toy, tmp_path)
    label = first_label(data)
    seg8 = cv2.imread(label, cv2.IMREAD_UNCHANGED)
    res = train(own, tmp_path / 'ok', opts_for(toy, data), iters=1)
    assert res.returncode == 0, res.stderr[-3000:]  # the right input passes

    seg16 = seg8.astype(np.uint16)
    seg16[3, 3] = 300
    cv2.imwrite(label, seg16)
    for config in (CVPT, own):
        res = train(config, tmp_path / f'w{osp.basename(config)}', opts_for(toy, data), iters=1)
        assert res.returncode != 0
        assert f'label file {label} is a 16-bit PNG' in res.stderr, res.stderr[-2000:]
        assert '300' in res.stderr and "dict(type='LoadWideSegLabels')" in res.stderr

    cv2.imwrite(label, np.stack([seg8] * 3, -1))  # a colour-coded mask
    res = train(own, tmp_path / 'rgb', opts_for(toy, data), iters=1)
    assert res.returncode != 0
    assert f'label file {label} is RGB, 8-bit (PNG colour type 2)' in res.stderr


def test_wide_labels_are_read_as_written(tmp_path):
    """LoadWideSegLabels keeps a 16-bit map's class ids (mmseg's LoadAnnotations turns 300 into
    44), applies reduce_zero_label with its ignore_index, and reads 8-bit maps as mmseg does."""
    from mmseg.datasets.transforms import LoadAnnotations

    from mmseg_prompt.datasets import LoadWideSegLabels, png_header
    seg = np.random.RandomState(0).randint(0, 400, (6, 7)).astype(np.uint16)
    seg[0, 0], seg[0, 1] = 0, 300
    path = str(tmp_path / 'wide.png')
    cv2.imwrite(path, seg)
    assert png_header(path) == (7, 6, 16, 0)

    def load(transform, reduce):
        return transform(dict(seg_map_path=path, reduce_zero_label=reduce,
                              seg_fields=[]))['gt_seg_map']
    wide = load(LoadWideSegLabels(), False)
    assert wide.dtype == np.uint16 and np.array_equal(wide, seg)
    assert load(LoadAnnotations(), False)[0, 1] == 44  # the cast this loader avoids
    reduced = load(LoadWideSegLabels(reduce_zero_label=True, ignore_index=65535), True)
    expected = seg.astype(np.int64) - 1
    expected[seg == 0] = 65535
    assert np.array_equal(reduced, expected)
    eight = str(tmp_path / 'eight.png')
    cv2.imwrite(eight, (seg % 150).astype(np.uint8))
    mmseg = LoadAnnotations(reduce_zero_label=True)(dict(
        seg_map_path=eight, reduce_zero_label=True, seg_fields=[]))['gt_seg_map']
    ours = LoadWideSegLabels(reduce_zero_label=True)(dict(
        seg_map_path=eight, reduce_zero_label=True, seg_fields=[]))['gt_seg_map']
    assert np.array_equal(ours, mmseg)
