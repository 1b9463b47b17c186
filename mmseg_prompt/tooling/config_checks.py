"""Config checks that run before a Runner is built: sizes that do not fit the patch size."""
import re
from typing import List, Optional, Tuple

from mmengine.config import Config


def _patch_size(backbone: dict) -> Optional[int]:
    """The patch size of a FrozenViT-family backbone config, from model_kwargs or the timm name."""
    kwargs = backbone.get('model_kwargs') or {}
    if 'patch_size' in kwargs:
        return int(kwargs['patch_size'])
    match = re.search(r'patch(\d+)', str(backbone.get('model_name', '')))
    return int(match.group(1)) if match else None


def _sizes(value) -> Tuple[int, ...]:
    if value is None:
        return ()
    return (int(value),) if isinstance(value, (int, float)) else tuple(int(v) for v in value)


def check_sizes_fit_patch(cfg: Config) -> None:
    """Raise ValueError if the backbone's ``img_size``, the training crop, the batch padding size
    or the sliding-window crop is not a multiple of the trunk's patch size.

    Inputs of any size still work at run time (they are padded), but a crop that is not a
    multiple pads every training sample and shifts the patch grid against the position
    embedding the trunk was resampled to.
    """
    model = cfg.get('model') or {}
    if model.get('type') == 'SegTTAModel':
        model = model.get('module') or {}
    backbone = model.get('backbone') or {}
    patch = _patch_size(backbone)
    if not patch:
        return
    checks: List[Tuple[str, Tuple[int, ...]]] = [
        ('model.backbone.img_size', _sizes(backbone.get('img_size'))),
        ('model.data_preprocessor.size', _sizes((model.get('data_preprocessor') or {})
                                                .get('size'))),
    ]
    test_cfg = model.get('test_cfg') or {}
    if test_cfg.get('mode') == 'slide':
        checks.append(('model.test_cfg.crop_size', _sizes(test_cfg.get('crop_size'))))
    pipeline = ((cfg.get('train_dataloader') or {}).get('dataset') or {}).get('pipeline') or []
    for i, t in enumerate(pipeline):
        if isinstance(t, dict) and t.get('type') == 'RandomCrop':
            checks.append((f'train_dataloader.dataset.pipeline.{i}.crop_size',
                           _sizes(t.get('crop_size'))))
    for key, sizes in checks:
        bad = [s for s in sizes if s % patch]
        if bad:
            s = bad[0]
            raise ValueError(
                f'{key} = {sizes if len(sizes) > 1 else sizes[0]} does not fit the patch size '
                f'{patch} of {backbone.get("model_name")}: use a multiple of {patch}, e.g. '
                f'{s - s % patch} or {s - s % patch + patch}')
