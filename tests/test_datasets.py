"""Synthetic datasets read by mmseg's own dataset classes, the layout check and CheckSegLabels."""
import filecmp
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS, TRANSFORMS

import mmseg_prompt.datasets  # noqa: F401  (registers CheckSegLabels)
from mmseg_prompt.datasets import CheckSegLabels, DatasetLayoutError, check_dataset_layout
from mmseg_prompt.testing import (ADE20K_SYNTHETIC_CLASSES, PASCAL_CONTEXT_SYNTHETIC_CLASSES,
                                  SYNTHETIC_COLOURS, make_synthetic_ade20k,
                                  make_synthetic_pascal_context)

ADE_PREFIX = {'train': dict(img_path='images/training', seg_map_path='annotations/training'),
              'val': dict(img_path='images/validation', seg_map_path='annotations/validation')}
CONTEXT_PREFIX = dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext')


def pipeline(num_classes):
    return [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='CheckSegLabels', num_classes=num_classes), dict(type='PackSegInputs')]


def ade_cfg(data_root, split='train'):
    return dict(type='ADE20KDataset', data_root=data_root, data_prefix=ADE_PREFIX[split],
                pipeline=pipeline(150))


def context_cfg(data_root, split='train'):
    return dict(type='PascalContextDataset59', data_root=data_root, data_prefix=CONTEXT_PREFIX,
                ann_file=f'ImageSets/SegmentationContext/{split}.txt', pipeline=pipeline(59))


def full_config(dataset_cfg_fn, data_root):
    """A config with mmseg's three dataloaders, as the real dataset configs have them."""
    return Config(dict(
        train_dataloader=dict(batch_size=2, dataset=dataset_cfg_fn(data_root, 'train')),
        val_dataloader=dict(batch_size=1, dataset=dataset_cfg_fn(data_root, 'val')),
        test_dataloader=dict(batch_size=1, dataset=dataset_cfg_fn(data_root, 'val'))))


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    return make_synthetic_ade20k(tmp_path_factory.mktemp('ade'))


@pytest.fixture(scope='module')
def context_root(tmp_path_factory):
    return make_synthetic_pascal_context(tmp_path_factory.mktemp('context'))


def check_samples(dataset, class_ids):
    """Every sample: labels within the reduced class ids and 255, image and label shapes equal."""
    allowed = {c - 1 for c in class_ids} | {255}
    seen, sizes, checked = set(), [], 0
    colour_of = {c - 1: np.array(SYNTHETIC_COLOURS[i][::-1]) for i, c in enumerate(class_ids)}
    for i in range(len(dataset)):
        sample = dataset[i]
        img = sample['inputs'].numpy().transpose(1, 2, 0)  # (H, W, 3) BGR, as mmseg loads it
        seg = sample['data_samples'].gt_sem_seg.data.numpy()[0]  # (H, W)
        assert img.shape[:2] == seg.shape
        values = set(np.unique(seg).tolist())
        assert values <= allowed, (i, values - allowed)
        assert 255 in values  # the unlabelled border, turned into the ignore index
        assert (seg[0] == 255).all() and (seg[:, -1] == 255).all()
        for v in values - {255}:  # the image shows the class's colour where the label says so
            inside = cv2.erode((seg == v).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            if inside.sum() >= 50:  # away from edges, which JPEG's chroma subsampling smears
                median = np.median(img[inside].astype(np.float32), axis=0)
                assert np.abs(median - colour_of[v]).max() < 25, (i, v, median)
                checked += 1
        seen |= values
        sizes.append(seg.shape)
    assert seen == allowed  # every class occurs somewhere
    assert checked >= 2 * len(dataset)
    assert any(h % 16 or w % 16 for h, w in sizes)
    assert len(set(sizes)) > 1
    return sizes


def test_synthetic_ade20k_reads_with_mmseg(ade_root):
    assert osp.basename(ade_root) == 'ADEChallengeData2016'
    train = DATASETS.build(ade_cfg(ade_root, 'train'))
    val = DATASETS.build(ade_cfg(ade_root, 'val'))
    assert type(train).__name__ == 'ADE20KDataset' and train.reduce_zero_label
    assert (len(train), len(val)) == (40, 12)
    assert osp.basename(train.get_data_info(0)['img_path']) == 'ADE_train_00000001.jpg'
    for ds in (train, val):
        sizes = check_samples(ds, ADE20K_SYNTHETIC_CLASSES)
        assert all(96 <= s <= 160 for hw in sizes for s in hw)


def test_synthetic_pascal_context_reads_with_mmseg(context_root):
    assert context_root.endswith(osp.join('VOCdevkit', 'VOC2010'))
    train = DATASETS.build(context_cfg(context_root, 'train'))
    val = DATASETS.build(context_cfg(context_root, 'val'))
    assert type(train).__name__ == 'PascalContextDataset59' and train.reduce_zero_label
    assert (len(train), len(val)) == (40, 12)
    train_ids = {osp.basename(train.get_data_info(i)['img_path']) for i in range(len(train))}
    val_ids = {osp.basename(val.get_data_info(i)['img_path']) for i in range(len(val))}
    assert not train_ids & val_ids
    assert '2008_000001.jpg' in train_ids
    for ds in (train, val):
        check_samples(ds, PASCAL_CONTEXT_SYNTHETIC_CLASSES)


def test_synthetic_classes_and_colours():
    for classes, top in ((ADE20K_SYNTHETIC_CLASSES, 150), (PASCAL_CONTEXT_SYNTHETIC_CLASSES, 59)):
        assert len(set(classes)) == len(classes) <= len(SYNTHETIC_COLOURS)
        assert all(1 <= c <= top for c in classes)
    colours = np.array(SYNTHETIC_COLOURS, dtype=float)
    dist = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert dist[~np.eye(len(colours), dtype=bool)].min() > 100  # far apart next to sigma-8 noise


def all_files(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize('make', [make_synthetic_ade20k, make_synthetic_pascal_context])
def test_synthetic_deterministic_and_idempotent(tmp_path, make):
    a = make(tmp_path / 'a', num_train=6, num_val=3, seed=3)
    b = make(tmp_path / 'b', num_train=6, num_val=3, seed=3)
    files = all_files(a)
    assert files == all_files(b) and len(files) > 18
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    c = make(tmp_path / 'c', num_train=6, num_val=3, seed=4)
    _, mismatch, _ = filecmp.cmpfiles(a, c, files, shallow=False)
    assert mismatch  # another seed gives other data
    # writing again with fewer images leaves no stale files behind
    make(tmp_path / 'a', num_train=2, num_val=1, seed=3)
    assert len(all_files(a)) < len(files)


def test_synthetic_sizes_avoid_multiples_of_16(tmp_path):
    root = make_synthetic_ade20k(tmp_path, num_train=8, num_val=1, size_range=(112, 113))
    folder = osp.join(root, 'annotations', 'training')
    shapes = {cv2.imread(osp.join(folder, f), cv2.IMREAD_UNCHANGED).shape
              for f in os.listdir(folder)}
    assert shapes == {(113, 113)}  # 112 = 7 * 16 is nudged to 113


def test_synthetic_refuses_to_overwrite_foreign_folder(tmp_path):
    real = tmp_path / 'ADEChallengeData2016'
    real.mkdir()
    (real / 'README.txt').write_text('the real thing')
    with pytest.raises(FileExistsError, match='refusing'):
        make_synthetic_ade20k(tmp_path)
    assert (real / 'README.txt').read_text() == 'the real thing'


def test_layout_ok_on_generated_data(ade_root, context_root):
    assert check_dataset_layout(full_config(ade_cfg, ade_root)) is None
    assert check_dataset_layout(full_config(context_cfg, context_root)) is None
    assert check_dataset_layout(full_config(ade_cfg, ade_root).to_dict()) is None


def test_layout_missing_data_root(tmp_path):
    missing = str(tmp_path / 'nowhere' / 'ADEChallengeData2016')
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset_layout(full_config(ade_cfg, missing))
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert missing in msg
    assert 'train_dataloader.dataset.data_root' in msg
    assert 'val_dataloader.dataset.data_root' in msg
    assert 'ADEChallengeData2016.zip' in msg and 'data/ade/' in msg
    assert '--cfg-options train_dataloader.dataset.data_root=' in msg
    assert 'tools/demo.py' in msg
    assert msg.count('Expected layout') == 1  # one help section per dataset type
    # mmseg itself fails on the same config, only less helpfully
    with pytest.raises(Exception):
        DATASETS.build(ade_cfg(missing))


def test_layout_empty_annotations_folder(tmp_path):
    root = make_synthetic_ade20k(tmp_path, num_train=2, num_val=1)
    labels = osp.join(root, 'annotations', 'training')
    for f in os.listdir(labels):
        os.remove(osp.join(labels, f))
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset_layout(full_config(ade_cfg, root))
    msg = str(info.value)
    assert 'train_dataloader.dataset.data_prefix.seg_map_path' in msg and labels in msg
    assert 'empty' in msg
    assert 'val_dataloader' not in msg.split('Expected layout')[0]  # validation is complete


def test_layout_pascal_context_missing_split_and_labels(tmp_path):
    root = make_synthetic_pascal_context(tmp_path, num_train=2, num_val=1)
    os.remove(osp.join(root, 'ImageSets', 'SegmentationContext', 'val.txt'))
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset_layout(full_config(context_cfg, root))
    msg = str(info.value)
    assert 'val_dataloader.dataset.ann_file' in msg and 'test_dataloader.dataset.ann_file' in msg
    assert osp.join(root, 'ImageSets', 'SegmentationContext', 'val.txt') in msg
    assert 'SegmentationClassContext' in msg and 'pascal_context.py' in msg
    assert 'trainval_merged.json' in msg
    assert '--cfg-options val_dataloader.dataset.data_root=' in msg

    os.rename(osp.join(root, 'SegmentationClassContext'), osp.join(root, 'labels_elsewhere'))
    with pytest.raises(DatasetLayoutError, match='data_prefix.seg_map_path'):
        check_dataset_layout(full_config(context_cfg, root))


def test_layout_looks_through_wrappers_and_absolute_prefixes(tmp_path, ade_root):
    ok = ade_cfg(ade_root)
    absolute = dict(ade_cfg(None), data_prefix={k: osp.join(ade_root, v)
                                                 for k, v in ADE_PREFIX['train'].items()})
    broken = ade_cfg(str(tmp_path / 'gone'))
    cfg = dict(train_dataloader=dict(dataset=dict(
        type='RepeatDataset', times=2,
        dataset=dict(type='ConcatDataset', datasets=[ok, absolute, broken]))),
        val_dataloader=None)
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset_layout(cfg)
    msg = str(info.value)
    assert 'train_dataloader.dataset.dataset.datasets.2.data_root' in msg
    assert 'datasets.0' not in msg and 'datasets.1' not in msg
    cfg['train_dataloader']['dataset']['dataset']['datasets'].pop()
    assert check_dataset_layout(cfg) is None


def test_layout_generic_dataset_type(tmp_path):
    cfg = dict(train_dataloader=dict(dataset=dict(
        type='BaseSegDataset', data_root=str(tmp_path),
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'))))
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset_layout(cfg)
    msg = str(info.value)
    assert osp.join(str(tmp_path), 'img_dir/train') in msg
    assert 'BaseSegDataset' in msg and 'ann_dir/train/' in msg


def test_check_seg_labels_rejects_out_of_range(tmp_path, ade_root):
    label_file = osp.join(ade_root, 'annotations', 'training', 'ADE_train_00000001.png')
    bad_root = make_synthetic_ade20k(tmp_path, num_train=1, num_val=1)
    bad_file = osp.join(bad_root, 'annotations', 'training', 'ADE_train_00000001.png')
    label = cv2.imread(bad_file, cv2.IMREAD_UNCHANGED)
    label[10:20, 10:20] = 200
    cv2.imwrite(bad_file, label)

    dataset = DATASETS.build(ade_cfg(bad_root))
    with pytest.raises(ValueError) as info:
        dataset[0]
    msg = str(info.value)
    assert bad_file in msg and '199' in msg and 'num_classes=150' in msg
    assert 'reduce_zero_label=True' in msg and 'ignore_index=255' in msg
    assert 'file values 200' in msg  # the value as stored in the PNG

    # the valid file passes through unchanged
    load = TRANSFORMS.build(dict(type='LoadAnnotations', reduce_zero_label=True))
    check = TRANSFORMS.build(dict(type='CheckSegLabels', num_classes=150))
    results = load(dict(seg_map_path=label_file, reduce_zero_label=True, seg_fields=[]))
    before = results['gt_seg_map'].copy()
    out = check(results)
    assert out is results and np.array_equal(out['gt_seg_map'], before)


def test_check_seg_labels_values():
    check = CheckSegLabels(num_classes=5, ignore_index=255)
    assert repr(check) == 'CheckSegLabels(num_classes=5, ignore_index=255)'
    ok = np.array([[0, 4], [255, 3]], dtype=np.uint8)
    assert check(dict(gt_seg_map=ok))['gt_seg_map'] is ok
    with pytest.raises(ValueError, match=r'values outside the classes: 5, 7\b') as info:
        check(dict(gt_seg_map=np.array([[0, 5], [7, 255]], dtype=np.uint8),
                   seg_map_path='x.png', reduce_zero_label=False))
    assert 'x.png' in str(info.value) and 'reduce_zero_label=False' in str(info.value)
    many = np.arange(5, 40, dtype=np.int64).reshape(5, 7)
    with pytest.raises(ValueError, match=r'\(and 25 more\)'):
        check(dict(gt_seg_map=many))
    with pytest.raises(ValueError, match='-1'):
        CheckSegLabels(num_classes=5, ignore_index=-100)(dict(gt_seg_map=np.array([[-1, 0]])))
    assert CheckSegLabels(3, ignore_index=-100)(dict(gt_seg_map=np.array([[-100, 2]]))) is not None
    image_only = dict(img=np.zeros((2, 2, 3)), img_path='a.jpg')
    assert check(image_only) is image_only  # no label (inference): passed through
    with pytest.raises(KeyError, match='after LoadAnnotations'):
        check(dict(image_only, seg_map_path='a.png'))  # a label file that was not loaded
    assert CheckSegLabels()(dict(gt_seg_map=np.array([[200, 0]]))) is not None  # no class count


def test_check_seg_labels_shape_and_size(tmp_path):
    check = CheckSegLabels(num_classes=5)
    ok = dict(gt_seg_map=np.zeros((4, 6), np.uint8), ori_shape=(4, 6), img_path='a.jpg',
              seg_map_path='a.png')
    assert check(ok) is ok
    with pytest.raises(ValueError, match=r'label map a.png is 2x3 \(HxW\), but its image a.jpg '
                       r'is 4x6'):
        check(dict(ok, gt_seg_map=np.zeros((2, 3), np.uint8)))
    rgb = str(tmp_path / 'rgb.png')
    cv2.imwrite(rgb, np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r'has shape \(4, 6, 3\) \(mode RGB, 3 channels\)'):
        check(dict(ok, gt_seg_map=np.zeros((4, 6, 3), np.uint8), seg_map_path=rgb))


@pytest.mark.parametrize('name,make,root', [
    ('ade20k.py', make_synthetic_ade20k, 'data/ade'),
    ('pascal_context_59.py', make_synthetic_pascal_context, 'data')])
def test_layout_on_mmseg_base_configs(tmp_path, monkeypatch, name, make, root):
    """mmseg's own dataset configs: fine on the synthetic data, a clear error without it."""
    import mmseg
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', '_base_', 'datasets', name)
    if not osp.isfile(path):
        pytest.skip(f'{path} is not installed with this mmseg')
    cfg = Config.fromfile(path)
    monkeypatch.chdir(tmp_path)  # the configs' data_root is relative: data/...
    with pytest.raises(DatasetLayoutError, match='train_dataloader.dataset.data_root'):
        check_dataset_layout(cfg)
    data_root = make(root, num_train=2, num_val=1)  # where the config expects it
    assert osp.normpath(data_root) == osp.normpath(cfg.data_root)
    assert check_dataset_layout(cfg) is None
