"""Small synthetic ADE20K and PASCAL Context datasets in the real folder layouts.

mmseg's own ``ADE20KDataset`` and ``PascalContextDataset59`` read them unchanged, so a config
that works on them works on the real data (and the other way round). Each image is a background
region of one class plus 2-5 large rectangles/ellipses of other classes, every class painted in a
fixed, clearly distinct colour with mild gaussian noise, and a thin border labelled 0 (unlabelled;
mmseg's ``reduce_zero_label=True`` turns it into the ignore index 255). A frozen random ViT with a
trainable head learns this in a few hundred CPU iterations.

The data_root gets a marker file; a non-empty folder without it is refused, so a real dataset is
never overwritten. Re-running replaces the synthetic files, so the result depends only on the
arguments.
"""
import os
import os.path as osp
import shutil
from pathlib import Path
from typing import Callable, Tuple, Union

import cv2
import numpy as np

# Class ids present in the label files (file values, before reduce_zero_label), spread over the
# label range, the top id included.
ADE20K_SYNTHETIC_CLASSES = (1, 13, 42, 77, 110, 150)
PASCAL_CONTEXT_SYNTHETIC_CLASSES = (1, 12, 25, 37, 48, 59)
# RGB colour of the i-th class of either tuple above: red, green, blue, yellow, magenta, cyan.
SYNTHETIC_COLOURS = ((230, 25, 25), (25, 200, 50), (30, 60, 230),
                     (240, 220, 30), (220, 40, 220), (40, 220, 230))

MARKER = 'SYNTHETIC_DATASET.txt'
NOISE_SIGMA = 8.0
BORDER = 2  # pixels labelled 0 (unlabelled) along each image edge
JPEG_QUALITY = 95


def _draw_sample(rng, size_range, class_ids):
    """One (image, label) pair: image (H, W, 3) uint8 RGB, label (H, W) uint8 class ids."""
    lo, hi = size_range
    h, w = (_odd_size(int(rng.integers(lo, hi + 1)), lo, hi) for _ in range(2))
    n = len(class_ids)
    index = np.full((h, w), rng.integers(n), dtype=np.uint8)  # index into class_ids
    background = int(index[0, 0])
    short = min(h, w)
    for _ in range(int(rng.integers(2, 6))):
        k = int(rng.choice([i for i in range(n) if i != background]))
        ch, cw = int(rng.integers(0, h)), int(rng.integers(0, w))
        sh, sw = (int(rng.uniform(0.25, 0.6) * short) for _ in range(2))
        if rng.random() < 0.5:
            cv2.rectangle(index, (cw - sw // 2, ch - sh // 2), (cw + sw // 2, ch + sh // 2),
                          color=k, thickness=-1)
        else:
            cv2.ellipse(index, (cw, ch), (sw // 2, sh // 2), float(rng.uniform(0, 180)), 0, 360,
                        color=k, thickness=-1)
    colours = np.asarray(SYNTHETIC_COLOURS[:n], dtype=np.float32)
    image = colours[index] + rng.normal(0.0, NOISE_SIGMA, (h, w, 3))
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    label = np.asarray(class_ids, dtype=np.uint8)[index]
    label[:BORDER] = label[-BORDER:] = 0
    label[:, :BORDER] = label[:, -BORDER:] = 0
    return image, label


def _odd_size(v, lo, hi):
    """Move a side length off a multiple of 16 (within [lo, hi] where possible)."""
    if v % 16 or lo == hi:
        return v
    return v + 1 if v < hi else v - 1


def _write_pair(image, label, img_file, seg_file):
    """Write image (RGB) as JPEG quality 95 and label as single-channel PNG."""
    cv2.imwrite(img_file, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    cv2.imwrite(seg_file, label)


def _claim_root(data_root, owned_dirs, name):
    """Create data_root for a synthetic dataset, clearing an earlier synthetic one there.

    Raises FileExistsError where data_root holds files but no marker (a real dataset, say).
    """
    marker = osp.join(data_root, MARKER)
    if osp.isdir(data_root) and os.listdir(data_root) and not osp.isfile(marker):
        raise FileExistsError(
            f'{data_root} exists, is not empty and has no {MARKER}: refusing to write a synthetic '
            f'{name} over what may be the real dataset; choose another root')
    for d in owned_dirs:
        shutil.rmtree(osp.join(data_root, d), ignore_errors=True)
        os.makedirs(osp.join(data_root, d))
    with open(marker, 'w') as f:
        f.write(f'Synthetic {name} written by mmseg_prompt.testing.synthetic; not real data.\n')


def write_ade20k_layout(root: Union[str, Path], num_train: int, num_val: int, seed: int,
                        draw: Callable[[np.random.Generator], Tuple[np.ndarray, np.ndarray]],
                        name: str = 'ADE20K') -> str:
    """Write ``draw(rng)`` samples (image (H, W, 3) uint8 RGB, label (H, W) uint8 file ids) under
    ``root/ADEChallengeData2016`` in ADE20K's layout; return that data_root.

    Layout: ``images/{training,validation}/ADE_{train,val}_%08d.jpg`` and
    ``annotations/{training,validation}/<same stem>.png``, numbered from 1 as in the real set;
    split k draws from ``default_rng([seed, k])``. ``name`` goes into the marker file.
    """
    data_root = osp.join(str(root), 'ADEChallengeData2016')
    splits = (('training', 'train', num_train), ('validation', 'val', num_val))
    _claim_root(data_root, [osp.join(top, s[0]) for top in ('images', 'annotations')
                            for s in splits], name)
    for k, (folder, tag, num) in enumerate(splits):
        rng = np.random.default_rng([seed, k])
        for i in range(1, num + 1):
            image, label = draw(rng)
            stem = f'ADE_{tag}_{i:08d}'
            _write_pair(image, label, osp.join(data_root, 'images', folder, stem + '.jpg'),
                        osp.join(data_root, 'annotations', folder, stem + '.png'))
    return data_root


def make_synthetic_ade20k(root: Union[str, Path], num_train: int = 40, num_val: int = 12,
                          size_range: Tuple[int, int] = (96, 160), seed: int = 0) -> str:
    """Write a synthetic ADE20K under ``root/ADEChallengeData2016``; return that data_root.

    Layout as ``write_ade20k_layout``; labels 0 = other and the ids of
    ``ADE20K_SYNTHETIC_CLASSES``.
    """
    return write_ade20k_layout(
        root, num_train, num_val, seed,
        lambda rng: _draw_sample(rng, size_range, ADE20K_SYNTHETIC_CLASSES))


def make_synthetic_pascal_context(root: Union[str, Path], num_train: int = 40, num_val: int = 12,
                                  size_range: Tuple[int, int] = (96, 160), seed: int = 0) -> str:
    """Write a synthetic PASCAL Context under ``root/VOCdevkit/VOC2010``; return that data_root.

    Layout: ``JPEGImages/<id>.jpg``, ``SegmentationClassContext/<id>.png`` (0 = background, ids
    of ``PASCAL_CONTEXT_SYNTHETIC_CLASSES``) and ``ImageSets/SegmentationContext/{train,val}.txt``
    (one id such as ``2008_000001`` per line), as mmseg's converter writes them.
    """
    data_root = osp.join(str(root), 'VOCdevkit', 'VOC2010')
    split_dir = osp.join('ImageSets', 'SegmentationContext')
    _claim_root(data_root, ['JPEGImages', 'SegmentationClassContext', split_dir],
                'PASCAL Context')
    start = 1
    for k, (split, num) in enumerate((('train', num_train), ('val', num_val))):
        rng = np.random.default_rng([seed, k])
        ids = [f'2008_{i:06d}' for i in range(start, start + num)]
        start += num
        for img_id in ids:
            image, label = _draw_sample(rng, size_range, PASCAL_CONTEXT_SYNTHETIC_CLASSES)
            _write_pair(image, label, osp.join(data_root, 'JPEGImages', img_id + '.jpg'),
                        osp.join(data_root, 'SegmentationClassContext', img_id + '.png'))
        with open(osp.join(data_root, split_dir, split + '.txt'), 'w') as f:
            f.writelines(img_id + '\n' for img_id in ids)
    return data_root
