"""A pipeline transform that turns label values outside the classes into a clear error.

Without it, a label map whose values do not fit ``num_classes`` fails deep inside the loss (a
CUDA device-side assert, or a silent wrong loss on CPU). Put ``CheckSegLabels`` right after
``LoadAnnotations``, so that ``reduce_zero_label`` has been applied to what it checks.
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

MAX_SHOWN = 10


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Raise ValueError if ``gt_seg_map`` holds a value outside 0..num_classes-1 and ignore_index.

    Required keys: ``gt_seg_map`` (H, W); ``seg_map_path`` and ``reduce_zero_label`` are used in
    the message. Results pass through unchanged.
    """

    def __init__(self, num_classes, ignore_index=255):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)

    def transform(self, results):
        if 'gt_seg_map' not in results:
            raise KeyError('CheckSegLabels needs results["gt_seg_map"]: put it after '
                           'LoadAnnotations in the pipeline')
        seg = np.asarray(results['gt_seg_map'])
        if seg.size == 0 or (seg.min() >= 0 and seg.max() < self.num_classes):
            return results
        bad = np.unique(seg[((seg < 0) | (seg >= self.num_classes)) & (seg != self.ignore_index)])
        if bad.size == 0:
            return results
        raise ValueError(self._message(results, bad))

    def _message(self, results, bad):
        """The error text for the out-of-range label values ``bad`` (sorted, unique)."""
        reduced = results.get('reduce_zero_label')
        shown = ', '.join(str(v) for v in bad[:MAX_SHOWN].tolist())
        more = f' (and {bad.size - MAX_SHOWN} more)' if bad.size > MAX_SHOWN else ''
        if reduced:
            how = ('reduce_zero_label=True was applied (file value 0 -> 255, v -> v-1), so '
                   f'these are file values {", ".join(str(v + 1) for v in bad[:MAX_SHOWN])}')
        else:
            how = f'reduce_zero_label={reduced} (values are as stored in the file)'
        return (
            f'label map {results.get("seg_map_path")} has values outside the classes: {shown}'
            f'{more}\n'
            f'  valid: 0..{self.num_classes - 1} (num_classes={self.num_classes}) and '
            f'ignore_index={self.ignore_index}; {how}.\n'
            f'  Fix: make num_classes of the decode/auxiliary heads (and of CheckSegLabels) match '
            f'the dataset, and check its label convention: ADE20K annotations are 0..150 with '
            f'reduce_zero_label=True (num_classes=150); PASCAL Context 59 needs the '
            f'SegmentationClassContext labels converted by mmseg\'s '
            f'tools/dataset_converters/pascal_context.py (0..59, reduce_zero_label=True, '
            f'num_classes=59), not the raw VOC2010 or 459-class maps.')

    def __repr__(self):
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
