"""A pipeline transform that checks each label map against its image, with a clear error.

Without it, a label map that does not fit fails deep inside training (``IndexError`` in the loss,
``RuntimeError: stack expects ...`` in collation, a CUDA device-side assert) or, worse, trains
silently: a label at half its image's size is resized with it. ``CheckSegLabels`` names the file,
what it found and what was expected. Put it right after ``LoadAnnotations``, before any resize or
crop: it compares the label with the image's original size (``ori_shape``) and sees the values
after ``reduce_zero_label``. Without a label (inference pipelines) it passes results through.
"""
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


MAX_SHOWN = 10
PLACE = 'put CheckSegLabels right after LoadAnnotations, before any resize or crop'


def _file_mode(path) -> str:
    """How PIL sees an image file ('mode RGB, 3 channels'), for error messages."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            return f'mode {im.mode}, {len(im.getbands())} channels'
    except Exception as err:  # the message is a hint; never hide the real problem behind it
        return f'unreadable by PIL: {err}'


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Raise ValueError if ``gt_seg_map`` is not a single-channel map of its image's original
    size, or holds a value outside 0..num_classes-1 and ignore_index.

    num_classes: the class count; None (the configs' default) checks channels and size only,
        and the tools (``mmseg_prompt.tooling.label_classes``) fill it in from the model's heads.
    Optional keys: ``gt_seg_map`` (H, W), ``ori_shape``; ``seg_map_path``, ``img_path`` and
    ``reduce_zero_label`` are used in messages. Results pass through unchanged.
    """

    def __init__(self, num_classes: Optional[int] = None, ignore_index: int = 255):
        self.num_classes = None if num_classes is None else int(num_classes)
        self.ignore_index = int(ignore_index)

    def transform(self, results: dict) -> dict:
        if 'gt_seg_map' not in results:
            if results.get('seg_map_path') is None:  # no label: inference
                return results
            raise KeyError(f'CheckSegLabels got no gt_seg_map for {results["seg_map_path"]}: '
                           f'{PLACE}')
        seg = np.asarray(results['gt_seg_map'])
        self._check_shape(results, seg)
        if self.num_classes is None or seg.size == 0:
            return results
        if seg.min() >= 0 and seg.max() < self.num_classes:
            return results
        bad = np.unique(seg[((seg < 0) | (seg >= self.num_classes)) & (seg != self.ignore_index)])
        if bad.size == 0:
            return results
        raise ValueError(value_message(results.get('seg_map_path'), bad, self.num_classes,
                                       self.ignore_index, results.get('reduce_zero_label')))

    @staticmethod
    def _check_shape(results: dict, seg: np.ndarray) -> None:
        """A single-channel label map of the image's size before any resize."""
        path = results.get('seg_map_path')
        if seg.ndim != 2:
            raise ValueError(
                f'label map {path} has shape {seg.shape} ({_file_mode(path)}), expected one '
                f'channel of class ids (H, W).\n'
                f'  Fix: save labels as single-channel PNGs whose pixel values are class ids '
                f'(8-bit grayscale, or palette PNGs read with LoadAnnotations\' default '
                f'imdecode_backend="pillow"); a colour-coded (RGB) mask must be converted to '
                f'class ids first (mmseg\'s tools/dataset_converters/ do this per dataset).')
        ori = results.get('ori_shape')
        if ori is not None and tuple(seg.shape) != tuple(ori[:2]):
            raise ValueError(
                f'label map {path} is {seg.shape[0]}x{seg.shape[1]} (HxW), but its image '
                f'{results.get("img_path")} is {ori[0]}x{ori[1]}: a label must have its image\'s '
                f'size.\n'
                f'  Fix: regenerate the label at the image\'s size (or pair the right files); if '
                f'the sizes are right, {PLACE}.')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')


def value_message(path: str, bad: np.ndarray, num_classes: int, ignore_index: int, reduced: bool,
                  source: Optional[str] = None) -> str:
    """The error text for the out-of-range label values ``bad`` (sorted, unique) of file ``path``;
    ``source`` says where ``num_classes`` comes from (e.g. the config key of a head)."""
    bad = np.asarray(bad)
    shown = ', '.join(str(v) for v in bad[:MAX_SHOWN].tolist())
    more = f' (and {bad.size - MAX_SHOWN} more)' if bad.size > MAX_SHOWN else ''
    if reduced:
        how = ('reduce_zero_label=True was applied (file value 0 -> 255, v -> v-1), so '
               f'these are file values {", ".join(str(v + 1) for v in bad[:MAX_SHOWN].tolist())}')
    else:
        how = f'reduce_zero_label={reduced} (values are as stored in the file)'
    return (
        f'label map {path} has values outside the classes: {shown}{more}\n'
        f'  valid: 0..{num_classes - 1} (num_classes={num_classes}'
        f'{f", from {source}" if source else ""}) and ignore_index={ignore_index}; {how}.\n'
        f'  Fix: make num_classes of the decode/auxiliary heads match the dataset, and check its '
        f'label convention: ADE20K annotations are 0..150 with reduce_zero_label=True '
        f'(num_classes=150); PASCAL Context 59 needs the SegmentationClassContext labels '
        f'converted by mmseg\'s tools/dataset_converters/pascal_context.py (0..59, '
        f'reduce_zero_label=True, num_classes=59), not the raw VOC2010 or 459-class maps.')
