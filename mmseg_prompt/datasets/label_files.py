"""Label files read the way they were written: their PNG header checked, 16-bit maps kept wide.

mmseg's ``LoadAnnotations`` decodes a label PNG and casts it to ``uint8``: a 16-bit map holding
class 300 (datasets with more than 255 classes store labels so) becomes 44, a valid but wrong
class, and an RGB (colour-coded) mask becomes three channels of garbage. What a label file is
can be read from its header without decoding it (docs/methods.md, "Label files"):

- :func:`png_header`: width, height, bit depth and colour type of a PNG (its IHDR chunk);
- :func:`image_shape`: an image's (H, W) as it decodes, from its header;
- :func:`label_file_issue`: what is wrong with a label file for its image and loader, and the
  fix, or None; :func:`label_file_problem`: the same as one message, or '';
- :class:`LoadWideSegLabels`: ``LoadAnnotations`` that keeps 16-bit class ids (as ``uint16``),
  with ``ignore_index`` for the value ``reduce_zero_label`` maps 0 to.
"""
import struct
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# PNG colour types (the PNG specification, IHDR): which ones hold one value per pixel
COLOUR_TYPES = {0: 'grayscale', 2: 'RGB', 3: 'palette', 4: 'grayscale + alpha', 6: 'RGBA'}
ONE_VALUE = (0, 3)


class PngHeader(NamedTuple):
    width: int
    height: int
    bit_depth: int
    colour_type: int


def png_header(path: str) -> Optional[PngHeader]:
    """The IHDR fields of PNG file ``path`` (its first 33 bytes), or None if it is no PNG."""
    with open(path, 'rb') as f:
        head = f.read(33)
    if len(head) < 33 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b'IHDR':
        return None
    width, height, depth, colour = struct.unpack('>IIBB', head[16:26])
    return PngHeader(width, height, depth, colour)


def _values_found(path: str) -> str:
    """The largest values of a label file as decoded without a cast (for messages)."""
    import cv2
    seg = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if seg is None:
        return 'not decodable'
    values = np.unique(seg)
    return f'values {", ".join(str(v) for v in values[-5:])} among {values.size} distinct'


# EXIF orientations that turn an image by 90 degrees (so the decoded H and W are swapped):
# mmcv's decoders apply the orientation (cv2's IMREAD_COLOR, pillow's exif_transpose)
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112


def image_shape(path: str) -> Optional[Tuple[int, int]]:
    """(H, W) of image file ``path`` as mmcv decodes it (EXIF orientation applied), read from its
    header by PIL without decoding the pixels; None if PIL cannot read it."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(EXIF_ORIENTATION) in TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except Exception:  # not an image PIL knows: the pipeline's loader reports it by name
        return None
    return height, width


class LabelFileIssue(NamedTuple):
    problem: str  # what is wrong, naming the file
    fix: str  # what to do about it


def label_file_issue(path: str, image_shape: Optional[Sequence[int]], keeps_16_bits: bool,
                     image_path: Optional[str] = None,
                     describe_values: bool = True) -> Optional[LabelFileIssue]:
    """What is wrong with label file ``path`` for an image (``image_path``, for messages) of
    ``image_shape`` (H, W) read by a loader that keeps 16 bits (``keeps_16_bits``) or casts to
    8, with the fix; None if nothing (or if it is not a PNG, whose header this does not read).
    Only the header is read, unless ``describe_values`` decodes a 16-bit file to name its
    largest values."""
    header = png_header(path)
    if header is None:
        return None
    kind = f'{COLOUR_TYPES.get(header.colour_type, "unknown")}, {header.bit_depth}-bit'
    if header.colour_type not in ONE_VALUE:
        return LabelFileIssue(
            f'label file {path} is {kind} (PNG colour type {header.colour_type}): a label map '
            f'holds one class id per pixel.',
            'convert colour-coded masks to class ids (grayscale or palette PNG; mmseg\'s '
            'tools/dataset_converters/ do this per dataset).')
    if header.bit_depth == 16 and not keeps_16_bits:
        values = f'; {_values_found(path)}' if describe_values else ''
        return LabelFileIssue(
            f'label file {path} is a 16-bit PNG ({kind}{values}), but mmseg\'s LoadAnnotations '
            f'casts label maps to 8 bits, so a class above 255 would become another class.',
            'load labels with dict(type=\'LoadWideSegLabels\') in place of LoadAnnotations '
            '(mmseg_prompt; set its ignore_index and the heads\' to a value no class uses), or '
            'store the labels as 8-bit PNGs if every class id is below 256.')
    if image_shape is not None and (header.height, header.width) != tuple(image_shape[:2]):
        image = f' {image_path}' if image_path else ''
        return LabelFileIssue(
            f'label map {path} is {header.height}x{header.width} (HxW), but its '
            f'image{image} is {image_shape[0]}x{image_shape[1]}: a label must have its '
            f'image\'s size.',
            'regenerate the label at the image\'s size, or pair the right files.')
    return None


def label_file_problem(path: str, image_shape: Optional[Sequence[int]],
                       keeps_16_bits: bool, image_path: Optional[str] = None) -> str:
    """:func:`label_file_issue` as one message, the fix on its own line; '' if nothing."""
    issue = label_file_issue(path, image_shape, keeps_16_bits, image_path)
    return f'{issue.problem}\n  Fix: {issue.fix}' if issue else ''


@TRANSFORMS.register_module()
class LoadWideSegLabels(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` for label maps of up to 16 bits: the class ids are kept as
    stored (``uint16``), not cast to 8 bits. With ``reduce_zero_label``, 0 becomes
    ``ignore_index`` and every other value v becomes v - 1; ``label_map`` applies as in mmseg.

    Args:
        ignore_index: the value of ignored pixels (the heads' ``ignore_index``; 255 collides with
            class 255 when there are more classes: then use e.g. 65535).
        **kwargs: ``LoadAnnotations``' (``reduce_zero_label``, ``imdecode_backend``, ...).
    """

    def __init__(self, ignore_index: int = 255, **kwargs):
        super().__init__(**kwargs)
        self.ignore_index = int(ignore_index)

    def _load_seg_map(self, results: dict) -> None:
        import mmcv
        from mmengine import fileio
        path = results['seg_map_path']
        data = fileio.get(path, backend_args=self.backend_args)
        # 16 bits: cv2 keeps them (pillow gives 32-bit ints); 8 bits (palette PNGs too): the
        # configured backend, as mmseg reads them
        wide = data[:len(PNG_SIGNATURE)] == PNG_SIGNATURE and data[24] == 16
        seg = mmcv.imfrombytes(data, flag='unchanged',
                               backend='cv2' if wide else self.imdecode_backend).squeeze()
        if seg.dtype not in (np.uint8, np.uint16):
            raise ValueError(f'label file {path} decodes to {seg.dtype}: '
                             f'LoadWideSegLabels reads 8- and 16-bit label maps')
        seg = seg.astype(np.uint16)
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        if self.reduce_zero_label:
            zero = seg == 0
            seg = seg - 1  # wraps at 0, overwritten next
            seg[zero] = self.ignore_index
        if results.get('label_map') is not None:
            original = seg.copy()
            for old, new in results['label_map'].items():
                seg[original == old] = new
        results['gt_seg_map'] = seg
        results['seg_fields'].append('gt_seg_map')

    def __repr__(self) -> str:
        return f'{super().__repr__()[:-1]}, ignore_index={self.ignore_index})'
