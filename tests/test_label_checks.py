"""Labels checked against their images and the model's heads, through the user's tools: a label
at another size than its image, an RGB label, heads whose class count is not the dataset's, and a
label value outside the heads' classes under mmseg's stock tools. Each refusal names the file (or
the config keys); the unmodified data trains and tests. CPU, the example config, a tiny trunk."""
import glob
import os.path as osp
import shutil
import subprocess
import sys

import cv2
import mmseg
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # our and the stock train/test tools in subprocesses
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')
STOCK = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')
HEADS_100 = ['model.decode_head.num_classes=100', 'model.auxiliary_head.num_classes=100']


def run(args):
    return subprocess.run([sys.executable] + [str(a) for a in args], cwd=REPO,
                          capture_output=True, text=True)


def opts_for(data_root, trunk):
    """Every training and validation file in the first iteration, no worker processes."""
    return ['--cfg-options', f'model.backbone.pretrained={trunk}', 'train_cfg.max_iters=1',
            'train_cfg.val_interval=1', 'train_dataloader.batch_size=2',
            'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
            'test_dataloader.num_workers=0', 'default_hooks.checkpoint.interval=1'] + [
        f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]


@pytest.fixture(scope='module')
def passing(tmp_path_factory):
    """The unmodified data: one iteration and a validation with tools/train.py and with mmseg's
    stock train.py; the checkpoint of the first serves the test-time cases."""
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    root = tmp_path_factory.mktemp('labels')
    data_root = make_synthetic_ade20k(root / 'ade', num_train=2, num_val=2, seed=2)
    trunk = root / 'trunk.pth'
    save_random_trunk(Config.fromfile(CONFIG).model.backbone, trunk, seed=0)
    opts = opts_for(data_root, trunk)
    for tool, work in ((f'{REPO}/tools/train.py', root / 'ours'),
                       (f'{STOCK}/train.py', root / 'stock')):
        res = run([tool, CONFIG, '--work-dir', work] + opts)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert 'Iter(train) [1/1]' in res.stdout and 'Iter(val) [2/2]' in res.stdout
    return dict(root=root, data_root=data_root, trunk=trunk, ckpt=root / 'ours' / 'iter_1.pth')


def broken_copy(passing, tmp_path, split, edit):
    """A copy of the data whose first `split` label is replaced by edit(label); its path."""
    data = tmp_path / 'ADEChallengeData2016'
    shutil.copytree(passing['data_root'], data)
    label = sorted(glob.glob(str(data / 'annotations' / split / '*.png')))[0]
    seg = cv2.imread(label, cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(label, edit(seg))
    return data, label


def image_of(label):
    return label.replace('annotations', 'images').replace('.png', '.jpg')


def test_half_size_training_label_is_refused(passing, tmp_path):
    data, label = broken_copy(passing, tmp_path, 'training', lambda s: cv2.resize(
        s, (s.shape[1] // 2, s.shape[0] // 2), interpolation=cv2.INTER_NEAREST))
    h, w = cv2.imread(image_of(label)).shape[:2]
    res = run([f'{REPO}/tools/train.py', CONFIG, '--work-dir', tmp_path / 'w']
              + opts_for(data, passing['trunk']))
    assert res.returncode != 0 and 'Iter(train)' not in res.stdout
    assert (f'label map {label} is {h // 2}x{w // 2} (HxW), but its image {image_of(label)} '
            f'is {h}x{w}') in res.stderr


def test_rgb_training_label_is_refused(passing, tmp_path):
    data, label = broken_copy(passing, tmp_path, 'training',
                              lambda s: cv2.cvtColor(s, cv2.COLOR_GRAY2BGR))
    res = run([f'{REPO}/tools/train.py', CONFIG, '--work-dir', tmp_path / 'w']
              + opts_for(data, passing['trunk']))
    assert res.returncode != 0 and 'Iter(train)' not in res.stdout
    # every label file's header is read before the first iteration (SegLabelCheckHook)
    assert f'label file {label} is RGB, 8-bit (PNG colour type 2)' in res.stderr
    assert 'a label map holds one class id per pixel' in res.stderr


def test_wrong_size_validation_label_is_refused_by_test(passing, tmp_path):
    data, label = broken_copy(passing, tmp_path, 'validation',
                              lambda s: np.pad(s, ((0, 0), (0, 16)), constant_values=0))
    h, w = cv2.imread(image_of(label)).shape[:2]
    res = run([f'{REPO}/tools/test.py', CONFIG, passing['ckpt'], '--work-dir', tmp_path / 'w']
              + opts_for(data, passing['trunk']))
    assert res.returncode != 0
    assert f'label map {label} is {h}x{w + 16} (HxW), but its image' in res.stderr
    # the checkpoint and the unmodified validation data test fine
    res = run([f'{REPO}/tools/test.py', CONFIG, passing['ckpt'], '--work-dir', tmp_path / 'ok']
              + opts_for(passing['data_root'], passing['trunk']))
    assert res.returncode == 0 and 'mIoU' in res.stdout, res.stderr[-3000:]


@pytest.mark.parametrize('tool', ['ours', 'stock'])
def test_heads_that_disagree_with_the_dataset_stop_before_training(passing, tmp_path, tool):
    path = f'{REPO}/tools/train.py' if tool == 'ours' else f'{STOCK}/train.py'
    res = run([path, CONFIG, '--work-dir', tmp_path]
              + opts_for(passing['data_root'], passing['trunk']) + HEADS_100)
    assert res.returncode != 0 and 'Iter(train)' not in res.stdout
    assert 'num_classes = 100, but train_dataloader.dataset' in res.stderr
    assert ('(ADE20KDataset) has 150 classes' in res.stderr
            and 'model.decode_head.num_classes=150' in res.stderr)
    if tool == 'ours':  # before the Runner is built
        assert 'model.decode_head.num_classes = 100' in res.stderr
        assert 'Checkpoints will be saved' not in res.stdout


def test_stock_test_names_a_label_outside_the_heads(passing, tmp_path):
    """mmseg's stock tools/test.py gets no class count into CheckSegLabels; SegLabelCheckHook
    (default_hooks) checks each batch against the heads and names the file."""
    data, label = broken_copy(passing, tmp_path, 'validation', lambda s: np.where(
        np.arange(s.size).reshape(s.shape) == 0, 200, s).astype(np.uint8))
    res = run([f'{STOCK}/test.py', CONFIG, passing['ckpt'], '--work-dir', tmp_path / 'w']
              + opts_for(data, passing['trunk']))
    assert res.returncode != 0
    assert f'label map {label} has values outside the classes: 199' in res.stderr
    assert 'from model.decode_head.num_classes' in res.stderr
