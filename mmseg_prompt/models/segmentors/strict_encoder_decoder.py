"""mmseg's EncoderDecoder, but a checkpoint whose tensors do not fit the model is refused.

mmengine's ``load_checkpoint`` is non-strict by default: a head tensor of another shape (another
``num_classes``, another width) is logged as "size mismatch" and left at its random
initialisation, and the test runs on. Every loading path (the Runner's ``load_from`` and
``resume``, so our tools and mmseg's stock ones; ``mmseg.apis.init_model``; ``MMSegInferencer``;
``nn.Module.load_state_dict``) calls the segmentor's ``_load_from_state_dict`` with the whole
state dict before its children's, with wrappers (DDP, ``SegTTAModel``) unwrapped, so the check
lives there.
"""
from typing import Dict, Optional, Tuple

import torch
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from ..backbones.frozen_vit import FrozenViT
from ..backbones.provenance import CheckpointMismatchError
from ..utils.state_dict_diff import diff_state_dict

# Segmentor buffers of MetricGuidedEncoderDecoder and the config keys that shape them.
_OWN_KEYS = dict(class_to_prompt='model.decode_head.num_classes',
                 class_sums='model.decode_head.num_classes',
                 class_counts='model.decode_head.num_classes',
                 centroids='model.backbone.num_guided_prompts')


@MODELS.register_module()
class StrictEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose checkpoints load strictly: a neck, head or segmentor tensor that
    is missing, extra or of another shape is an error naming the tensor, both shapes and the
    likely config key. A backbone that checks its own keys (``FrozenViT`` and the prompt
    methods: shapes and provenance) is left to do so; any other backbone is checked here too.

    Args: those of ``EncoderDecoder``.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        check_state_dict(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def checks_itself(backbone: torch.nn.Module) -> bool:
    """Whether the backbone checks the keys, shapes and provenance of its part of a checkpoint
    (the FrozenViT family does, in its ``_load_from_state_dict``)."""
    return isinstance(backbone, FrozenViT)


def expected_tensors(segmentor: torch.nn.Module, prefix: str = '') -> Dict[str, torch.Tensor]:
    """The segmentor's tensors by state-dict name, without those of a backbone that checks its
    own. Its own tensors: parameters and buffers (EncoderDecoder's subclasses here register
    persistent buffers only)."""
    out = {prefix + n: t for n, t in segmentor.named_parameters(recurse=False)}
    out.update({prefix + n: t for n, t in segmentor.named_buffers(recurse=False)})
    for name, child in segmentor.named_children():
        if not (name == 'backbone' and checks_itself(child)):
            out.update(child.state_dict(prefix=f'{prefix}{name}.'))
    return out


def check_state_dict(segmentor: torch.nn.Module, state_dict: Dict[str, torch.Tensor],
                     prefix: str = '') -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` has every tensor of the
    segmentor (BN's ``num_batches_tracked`` may be missing), no other, each of the same shape."""
    expected = expected_tensors(segmentor, prefix)
    skip = 'backbone.' if checks_itself(segmentor.backbone) else None
    diff = diff_state_dict(state_dict, {k[len(prefix):]: t for k, t in expected.items()}, prefix,
                           ignore_extra=lambda name: bool(skip) and name.startswith(skip))
    reshaped = diff.of_kind('shape')
    if reshaped:
        m = reshaped[0]
        others = ', '.join(r.key for r in reshaped[1:6])
        more = f' (and {len(reshaped) - 1} more of another shape: {others})' if others else ''
        raise CheckpointMismatchError(
            f'`{m.key}` has shape {m.saved} in the checkpoint but {m.model} in the model{more}: '
            f'{_likely_fix(m.key[len(prefix):], m.saved, m.model)}')
    missing = [m for m in diff.of_kind('missing') if 'num_batches_tracked' not in m.key]
    if missing:
        raise CheckpointMismatchError(
            f'the checkpoint has no `{missing[0].key}` {missing[0].model} '
            f'({len(missing)} such tensors), which this model has: it was trained with another '
            f'{_config_key(missing[0].key[len(prefix):])} (or without it). Load it with the '
            f'config it was trained with')
    if diff.extra:
        m = diff.extra[0]
        raise CheckpointMismatchError(
            f'the checkpoint has `{m.key}` {m.saved} ({len(diff.extra)} such tensors), which '
            f'this model does not have: it was trained with another '
            f'{_config_key(m.key[len(prefix):])}. Load it with the config it was trained with')


def _config_key(name: str) -> str:
    """The config entry a state-dict name belongs to: 'model.decode_head', 'model.neck', ..."""
    parts = name.split('.')
    if parts[0] in _OWN_KEYS:
        return _OWN_KEYS[parts[0]]
    key = f'model.{parts[0]}'
    if len(parts) > 1 and parts[1].isdigit():  # a list of auxiliary heads
        key += f'[{parts[1]}]'
    return key


def _likely_fix(name: str, saved: Tuple[int, ...], model: Tuple[int, ...]) -> str:
    """What to change, for a tensor of shape ``saved`` in the checkpoint, ``model`` here."""
    key = _config_key(name)
    classes: Optional[int] = None
    if '.conv_seg.' in f'.{name}' and saved[:1] != model[:1]:
        key, classes = f'{key}.num_classes', saved[0]
    elif name.split('.')[0] in ('class_to_prompt', 'class_sums', 'class_counts'):
        classes = saved[0]
    if classes is not None:
        return (f'the checkpoint was trained with {key}={classes}, this config has {model[0]}: '
                f'set {key}={classes} (e.g. --cfg-options {key}={classes}) or load a checkpoint '
                f'trained for this config')
    if key == 'model.neck':
        key = 'model.neck.embed_dim / in_channels / out_channels'
    elif key.startswith(('model.decode_head', 'model.auxiliary_head')):
        key = f'{key}.channels / in_channels'
    return (f'the checkpoint was trained with another {key}: load it with the config it was '
            f'trained with')
