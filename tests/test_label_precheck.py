"""Every label file's header checked before the first iteration (SegLabelCheckHook, label_precheck):
a bad label anywhere in a small split is refused by tools/train.py before training, one message
lists every bad file with each fix once, a record lets a resumed run skip unchanged files, and
two gloo ranks read each file once and refuse together. The unmodified data trains."""
import glob
import json
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CVPT = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')


class FileList:
    """A dataset as the precheck sees mmseg's: len() and get_data_info(i)."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def get_data_info(self, i):
        return dict(img_path=self.pairs[i][0], seg_map_path=self.pairs[i][1])


def write_pair(folder, i, kind, h=6, w=8):
    """An image (h, w) and its label: 'ok' (8-bit grayscale), 'rgb', 'wide' (16-bit, class
    300) or 'half' (half the image's size)."""
    image, label = str(folder / f'{i:03d}.jpg'), str(folder / f'{i:03d}.png')
    assert cv2.imwrite(image, np.full((h, w, 3), 90, np.uint8))
    seg = np.full((h, w), 3, np.uint8)
    if kind == 'rgb':
        seg = np.stack([seg] * 3, -1)
    elif kind == 'wide':
        seg = seg.astype(np.uint16)
        seg[1, 1] = 300
    elif kind == 'half':
        seg = seg[:h // 2, :w // 2]
    assert cv2.imwrite(label, seg)
    return image, label


def test_one_message_lists_every_bad_file_in_order_with_each_fix_once(tmp_path):
    from mmseg_prompt.datasets.label_precheck import MAX_LISTED, CheckRecord
    from mmseg_prompt.engine import SegLabelCheckHook
    kinds = ['ok', 'rgb', 'wide', 'half', 'ok'] + ['rgb', 'wide', 'half'] * 7  # 24 bad of 26
    pairs = [write_pair(tmp_path, i, k) for i, k in enumerate(kinds)]
    record = CheckRecord(str(tmp_path / 'record.json'))
    message = SegLabelCheckHook._check_dataset('train_dataloader.dataset', FileList(pairs),
                                               record)
    lines = message.splitlines()
    assert lines[0].startswith('24 of 26 label files of train_dataloader.dataset cannot be used')
    bad = [(p, k) for p, k in zip(pairs, kinds) if k != 'ok']
    listed = lines[1:1 + MAX_LISTED]
    for line, ((image, label), kind) in zip(listed, bad):
        expected = {'rgb': f'label file {label} is RGB, 8-bit (PNG colour type 2)',
                    'wide': f'label file {label} is a 16-bit PNG',
                    'half': f'label map {label} is 3x4 (HxW), but its image {image} is 6x8'}
        assert line.startswith(f'  - {expected[kind]}'), (line, kind)
    assert '300' in listed[1]  # a listed 16-bit file's values are decoded and named
    assert lines[1 + MAX_LISTED] == f'  ... and 4 more (the first {MAX_LISTED} are listed)'
    fixes = [line for line in lines if line.startswith('  Fix: ')]
    assert len(fixes) == 3 and any("dict(type='LoadWideSegLabels')" in f for f in fixes)
    assert len(lines) == 1 + MAX_LISTED + 1 + 3
    assert pairs[0][1] not in message and pairs[4][1] not in message
    assert sorted(record.files) == sorted([pairs[0][1], pairs[4][1]])  # the passed ones


def test_the_record_skips_unchanged_files_and_rechecks_changed_ones(tmp_path, monkeypatch):
    from mmseg_prompt.datasets import label_precheck
    from mmseg_prompt.datasets.label_precheck import (CheckRecord, LabelPair,
                                                      check_label_files)
    pairs = [LabelPair(label, image, False)
             for image, label in (write_pair(tmp_path, i, 'ok') for i in range(4))]
    read = []
    real = label_precheck.label_file_issue
    monkeypatch.setattr(label_precheck, 'label_file_issue',
                        lambda path, *a, **k: (read.append(path), real(path, *a, **k))[1])
    path = str(tmp_path / 'record.json')
    first = check_label_files(list(enumerate(pairs)), CheckRecord(path))
    assert not first.bad and first.skipped == 0 and len(read) == 4
    record = CheckRecord(path)
    record.files.update(first.passed)
    record.save()
    read.clear()
    again = check_label_files(list(enumerate(pairs)), CheckRecord(path))
    assert again.skipped == 4 and read == []  # nothing read: a resumed run's case
    write_pair(tmp_path, 1, 'rgb')  # a label rewritten (size and mtime change)
    write_pair(tmp_path, 2, 'ok', h=6, w=8)  # the same bytes again: mtime changes
    assert cv2.imwrite(pairs[3].image, np.zeros((6, 10, 3), np.uint8))  # an image resized
    wide = [p._replace(keeps_16_bits=True) if i == 0 else p for i, p in enumerate(pairs)]
    changed = check_label_files(list(enumerate(wide)), CheckRecord(path))
    assert sorted(read) == sorted(p.label for p in pairs) and changed.skipped == 0
    assert [b.pair.label for b in changed.bad] == [pairs[1].label, pairs[3].label]
    assert 'is 6x8 (HxW), but its image' in changed.bad[1].issue.problem
    assert json.load(open(path))['version'] == 1


def test_image_sizes_are_read_as_mmcv_decodes_them(tmp_path):
    """The header read gives the size the loader gives: EXIF orientation 6 swaps H and W."""
    import mmcv
    from PIL import Image

    from mmseg_prompt.datasets.label_files import image_shape
    for orientation in (1, 6):
        path = str(tmp_path / f'o{orientation}.jpg')
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(path, exif=exif)
        assert image_shape(path) == mmcv.imread(path).shape[:2]
        assert image_shape(path) == ((6, 10) if orientation == 1 else (10, 6))
    (tmp_path / 'not_an_image.jpg').write_bytes(b'text')
    assert image_shape(str(tmp_path / 'not_an_image.jpg')) is None


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def rank_worker(rank, port, folder, kinds):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    from pathlib import Path

    from mmseg_prompt.datasets import label_precheck
    from mmseg_prompt.engine import SegLabelCheckHook
    read = []
    real = label_precheck.check_pair
    label_precheck.check_pair = lambda pair: (read.append(pair.label), real(pair))[1]
    folder = Path(folder)
    pairs = [(str(folder / f'{i:03d}.jpg'), str(folder / f'{i:03d}.png')) for i in
             range(len(kinds))]
    runner = type('Runner', (), dict(work_dir=str(folder / 'work')))()
    loader = type('Loader', (), dict(dataset=FileList(pairs)))()
    try:
        SegLabelCheckHook()._check_label_files(runner, [('train_dataloader', loader)])
        outcome = 'passed'
    except ValueError as e:
        outcome = str(e)
    with open(folder / f'rank{rank}.json', 'w') as f:
        json.dump(dict(read=read, outcome=outcome), f)
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_read_each_file_once_and_refuse_together(tmp_path):
    kinds = ['ok', 'ok', 'rgb', 'ok', 'ok', 'wide', 'ok']
    pairs = [write_pair(tmp_path, i, k) for i, k in enumerate(kinds)]
    import mmseg_prompt.engine  # noqa: F401  (imported once, here: the ranks are forked)
    mp.start_processes(rank_worker, args=(free_port(), str(tmp_path), kinds), nprocs=2,
                       join=True, start_method='fork')
    r0, r1 = (json.load(open(tmp_path / f'rank{r}.json')) for r in (0, 1))
    assert not set(r0['read']) & set(r1['read'])  # each file read once across ranks
    assert sorted(r0['read'] + r1['read']) == sorted(label for _, label in pairs)
    assert r0['outcome'] == r1['outcome']  # every rank stops, with the same message
    assert r0['outcome'].startswith('2 of 7 label files of train_dataloader.dataset')
    assert pairs[2][1] in r0['outcome'] and pairs[5][1] in r0['outcome']
    record = json.load(open(tmp_path / 'work' / 'label_files_checked.json'))['files']
    assert sorted(record) == sorted(label for (_, label), k in zip(pairs, kinds) if k == 'ok')


# ---------------------------------------------------------------------------- tools/train.py
@pytest.fixture(scope='module')
def split(tmp_path_factory):
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    root = tmp_path_factory.mktemp('precheck')
    data_root = make_synthetic_ade20k(root / 'ade', num_train=3, num_val=1, seed=4)
    save_random_trunk(Config.fromfile(CVPT).model.backbone, root / 'trunk.pth', seed=0)
    own = root / 'own_pipeline.py'  # a user's pipeline: mmseg's loader, no CheckSegLabels
    own.write_text(f"""_base_ = ['{CVPT}']
train_pipeline = [dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='RandomCrop', crop_size=(128, 128)),
                  dict(type='PackSegInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
""")
    opts = [f'model.backbone.pretrained={root / "trunk.pth"}', 'train_dataloader.batch_size=2',
            'train_dataloader.num_workers=0', 'train_cfg.max_iters=1',
            'default_hooks.logger.interval=1',
            'train_cfg.val_interval=1000'] + [
        f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]
    return dict(root=root, data_root=data_root, config=own, opts=opts)


def train(split, work):
    return subprocess.run([sys.executable, f'{REPO}/tools/train.py', str(split['config']),
                           '--work-dir', str(work), '--cfg-options', *split['opts']],
                          cwd=REPO, capture_output=True, text=True)


DAMAGE = {  # a defect per position: what it does to an 8-bit label (H, W), how it is named
    0: (lambda s: np.where(s > 0, 300, 0).astype(np.uint16),
        lambda h, w: 'is a 16-bit PNG (grayscale, 16-bit; values 0, 300 among 2 distinct)'),
    1: (lambda s: np.stack([s] * 3, -1), lambda h, w: 'is RGB, 8-bit (PNG colour type 2)'),
    2: (lambda s: s[:s.shape[0] // 2, :s.shape[1] // 2],
        lambda h, w: f'is {h // 2}x{w // 2} (HxW), but its image'),
}


@pytest.mark.slow  # tools/train.py in subprocesses
def test_a_bad_label_anywhere_in_the_split_is_refused_before_training(split):
    """One batch of 2 out of 3 images: a per-batch check would miss one file; this one reads
    every header first. The unmodified split trains; then each position in turn holds a bad
    label, refused before the first iteration, the two unchanged ones skipped by the record."""
    work = split['root'] / 'work'
    res = train(split, work)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert 'Iter(train) [1/1]' in res.stdout
    assert ('label files of train_dataloader.dataset: 3 checked' in res.stdout
            and '(0 unchanged since label_files_checked.json), 0 bad' in res.stdout)
    labels = sorted(glob.glob(osp.join(split['data_root'], 'annotations/training/*.png')))
    assert len(labels) == 3
    for position, (damage, named) in DAMAGE.items():
        label = labels[position]
        shutil.copy2(label, split['root'] / 'kept.png')  # its mtime too
        seg = cv2.imread(label, cv2.IMREAD_UNCHANGED)
        assert cv2.imwrite(label, damage(seg))
        try:
            res = train(split, work)
        finally:
            shutil.copy2(split['root'] / 'kept.png', label)  # unchanged again for the record
        assert res.returncode != 0, position
        assert 'Iter(train)' not in res.stdout, position
        assert ('1 of 3 label files of train_dataloader.dataset cannot be used' in res.stderr
                and f'{label} {named(*seg.shape)}' in res.stderr), (position, res.stderr[-3000:])
        assert '(2 unchanged since label_files_checked.json), 1 bad' in res.stdout, position
    assert os.path.isfile(work / 'label_files_checked.json')
