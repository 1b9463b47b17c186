"""The synthetic tasks of the prompt comparison (docs/comparison.md), generated in code from a seed.

- **Source task** (pretraining the tiny trunk, ``tiny_trunk.py``): segment four kinds of
  shapes, one or two per 64 x 64 image, each shape and the background in a random colour, so
  that colour never tells the class and the trunk learns to look past it.
- **Downstream task** (the comparison, with a shift): other classes on other images. Each of
  four classes is a *pair of opposite hues* (sectors k and k + 4 of eight 45-degree hue sectors),
  painted on a background and two or three shapes of eight kinds, whose kind no longer
  matters. Which pair a colour belongs to is not a linear function of its RGB value (the two
  hues of a class lie on opposite sides of the grey axis, with the other classes between them),
  so a linear head on the frozen trunk's last features separates the classes only as far as
  the trunk's shape-trained features already do; prompts can change those features.

Images are RGB uint8. The downstream set is written in ADE20K's folder layout, with the label ids
of ``HUE_PAIR_CLASS_IDS`` (``reduce_zero_label`` maps id k to class k - 1), and read by mmseg's
``ADE20KDataset``.
"""
import colorsys
import math
from pathlib import Path
from typing import Callable, Sequence, Tuple, Union

import numpy as np

from .synthetic import write_ade20k_layout

SIZE = 64
SHAPES = ('disc', 'square', 'triangle', 'cross', 'ring', 'diamond', 'bar', 'corner')
SOURCE_SHAPES = SHAPES[:4]  # the pretraining classes; the downstream images draw all eight
# The downstream classes (hue sectors in degrees) and their ids in the label files.
HUE_PAIR_CLASSES = tuple(f'hues {45 * k}-{45 * k + 45} or {45 * k + 180}-{45 * k + 225} deg'
                         for k in range(4))
HUE_PAIR_CLASS_IDS = (1, 2, 3, 4)


def shape_mask(kind: int, centre: Tuple[float, float], radius: float, angle: float,
               size: int = SIZE) -> np.ndarray:
    """Boolean (size, size) mask of ``SHAPES[kind]`` with the given centre (y, x), radius (px)
    and rotation (radians)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    r = radius
    box = (abs(u) <= r) & (abs(v) <= r)
    masks = (
        lambda: u * u + v * v <= r * r,
        lambda: (abs(u) <= 0.85 * r) & (abs(v) <= 0.85 * r),
        lambda: (v >= -0.6 * r) & (v <= 0.9 * r) & (abs(u) <= 0.65 * (v + 0.6 * r)),
        lambda: ((abs(u) <= 0.3 * r) | (abs(v) <= 0.3 * r)) & box,
        lambda: (u * u + v * v <= r * r) & (u * u + v * v >= (0.55 * r) ** 2),
        lambda: abs(u) + abs(v) <= r,
        lambda: (abs(u) <= r) & (abs(v) <= 0.35 * r),
        lambda: box & ~((u > -0.3 * r) & (v > -0.3 * r)),
    )
    return masks[kind]()


def _paint_shapes(rng: np.random.Generator, image: np.ndarray, index: np.ndarray,
                  kinds: Sequence[int], classes: Sequence[int],
                  radius_range: Tuple[float, float],
                  colour_of: Callable[[int], np.ndarray]) -> None:
    """Paint one shape per (kind, class) pair into ``image`` (H, W, 3) float and its class into
    ``index`` (H, W), in place: random centre, radius (a fraction of the side) and rotation;
    ``colour_of(class)`` draws the shape's RGB colour."""
    size = image.shape[0]
    for kind, cls in zip(kinds, classes):
        mask = shape_mask(int(kind),
                          (rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size),
                          rng.uniform(*radius_range) * size, rng.uniform(0, math.pi), size)
        image[mask] = colour_of(int(cls))
        index[mask] = cls


def source_samples(rng: np.random.Generator, num: int,
                   size: int = SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """``num`` source images (num, size, size, 3) uint8 RGB and their per-pixel shape labels
    (num, size, size) int64: 0 background, k = ``SOURCE_SHAPES[k - 1]``. One or two shapes,
    each and the background in a random colour (so colour never tells the shape), gaussian
    noise."""
    images = np.empty((num, size, size, 3), np.uint8)
    labels = np.zeros((num, size, size), np.int64)
    for i in range(num):
        image = np.empty((size, size, 3), np.float32)
        image[:] = rng.uniform(0, 255, 3)
        kinds = rng.integers(len(SOURCE_SHAPES), size=int(rng.integers(1, 3)))
        _paint_shapes(rng, image, labels[i], kinds, kinds + 1, (0.22, 0.35),
                      lambda _: rng.uniform(0, 255, 3))
        image += rng.normal(0.0, 10.0, image.shape)
        images[i] = np.clip(np.rint(image), 0, 255)
    return images, labels


def hue_pair_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """A random RGB colour (3,) float32 of downstream class ``cls`` (0-3): its hue lies in sector
    ``cls`` or ``cls + 4`` of eight 45-degree sectors (opposite hues, picked at random),
    saturation and value in [0.5, 1]."""
    sector = cls + 4 * int(rng.integers(2))
    hue = (sector + rng.uniform(0.1, 0.9)) / 8
    return np.asarray(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)),
                      np.float32) * 255


def hue_pair_sample(rng: np.random.Generator,
                    size: int = SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """One downstream (image (size, size, 3) uint8 RGB, label (size, size) uint8 of
    ``HUE_PAIR_CLASS_IDS``): a background and two or three shapes of random kinds, each region
    of a random class of ``HUE_PAIR_CLASSES``, shown in one of its two hues; gaussian noise."""
    num_classes = len(HUE_PAIR_CLASSES)
    background = int(rng.integers(num_classes))
    index = np.full((size, size), background, np.int64)
    image = np.empty((size, size, 3), np.float32)
    image[:] = hue_pair_colour(rng, background)
    num = int(rng.integers(2, 4))
    _paint_shapes(rng, image, index, rng.integers(len(SHAPES), size=num),
                  rng.integers(num_classes, size=num), (0.14, 0.25),
                  lambda cls: hue_pair_colour(rng, cls))
    image += rng.normal(0.0, 10.0, image.shape)
    label = np.asarray(HUE_PAIR_CLASS_IDS, np.uint8)[index]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def make_hue_pairs_ade20k(root: Union[str, Path], num_train: int = 200, num_val: int = 60,
                          seed: int = 0) -> str:
    """Write the downstream task under ``root/ADEChallengeData2016`` in ADE20K's layout
    (``synthetic.write_ade20k_layout``), 64 x 64 images; return that data_root. The same
    arguments write the same files."""
    return write_ade20k_layout(root, num_train, num_val, seed, hue_pair_sample,
                               'ADE20K (hue pairs)')
