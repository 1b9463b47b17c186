"""The checkpoint policy of :class:`FrozenViT`: tuned-only state dicts, checked on load.

Saving: the backbone's state dict leaves the frozen trunk out (it comes from
``model.backbone.pretrained``; ``save_frozen_trunk=True`` keeps it, as the export tool does) and
adds the provenance record (``provenance.py``). Loading a tuned-only checkpoint puts the
pretrained trunk back; a full one replaces it. Anything that would leave the backbone silently
different from the checkpoint's is an error (:func:`load_backbone_state`).
"""
import logging
from typing import Dict, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..utils.state_dict_diff import diff_state_dict
from . import provenance
from .provenance import PROVENANCE_KEY
from .trunk_weights import TrunkWeightsError

# Keys of tensors that moved into a part: checkpoint name -> model name (relative to the
# backbone). K/V bias deltas were a backbone parameter before they became the `kv_bias` part.
LEGACY_KEYS = {'kv_bias_delta': 'kv_bias.delta'}


def register_state_dict_hooks(backbone: nn.Module) -> None:
    """``state_dict()``: the frozen trunk out, then the provenance record in (in this order)."""
    backbone.register_state_dict_post_hook(_drop_frozen_trunk)
    backbone.register_state_dict_post_hook(_add_provenance)


def tuned_state(backbone: nn.Module, prefix: str = '') -> Dict[str, torch.Tensor]:
    """The tensors that train (everything outside ``trunk``), as the state dict holds them."""
    state: Dict[str, torch.Tensor] = {}
    for name, child in backbone.named_children():
        if name != 'trunk':
            state.update(child.state_dict(prefix=f'{prefix}{name}.'))
    return state


def load_backbone_state(backbone: nn.Module, state_dict: Dict[str, torch.Tensor],
                        prefix: str) -> bool:
    """Prepare ``state_dict`` (edited in place) for the backbone's own loading; returns whether
    the checkpoint held only the tuned weights.

    A tuned-only checkpoint gets the pretrained trunk put back (an error without one); a full
    one must hold every trunk tensor in its shape. The tuned tensors must match the model's
    exactly (none missing, extra or of another shape), and the provenance record must name
    these tuning parts with these options, these features and (tuned-only) this frozen trunk; a
    checkpoint without the record (written before it existed) loads with a warning.
    """
    for old, new in LEGACY_KEYS.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)
    name = type(backbone).__name__
    trunk_prefix = prefix + 'trunk.'
    saved = state_dict.pop(prefix + PROVENANCE_KEY, None)
    own_trunk = backbone.trunk.state_dict()
    tuned_only = not any(k.startswith(trunk_prefix) for k in state_dict)
    if tuned_only:  # put the pretrained trunk back
        if backbone.trunk_source is None and backbone.init_cfg is not None:
            backbone.init_weights()
        if backbone.trunk_source is None:
            raise TrunkWeightsError(
                f'the checkpoint holds only the tuned weights of {name} (no `{trunk_prefix}*` '
                f'keys) and this backbone has no trunk to put back: set '
                f'`model.backbone.pretrained` to the trunk file the run was trained with, or '
                f'load a full checkpoint (tools/export_full_checkpoint.py)')
        for key, tensor in own_trunk.items():
            state_dict[trunk_prefix + key] = tensor
    else:
        check_tensors(state_dict, trunk_prefix, own_trunk, 'the frozen trunk',
                      f'a full checkpoint of another trunk than {backbone.model_name}')
    check_tensors(state_dict, prefix, tuned_state(backbone), f'{name}\'s tuned weights',
                  'a checkpoint trained with other tuning settings (num_prompts, parts, '
                  'model_name, embed_dim) or another method', extra_ok=('trunk.',))
    _check_provenance(backbone, saved, prefix + PROVENANCE_KEY, tuned_only)
    if tuned_only:
        print_log(f'{name}: the checkpoint holds tuned weights only; the frozen trunk stays as '
                  f'loaded from {backbone.trunk_source} (sha256 {backbone.trunk_sha256()[:16]})',
                  logger='current')
    return tuned_only


def _check_provenance(backbone: nn.Module, saved, key: str, tuned_only: bool) -> None:
    """Compare the checkpoint's provenance record with the backbone's (the trunk too for a
    tuned-only checkpoint); a checkpoint without one loads with a warning."""
    name = type(backbone).__name__
    if saved is None:
        print_log(f'{name}: the checkpoint has no `{key}` (it was written before checkpoints '
                  f'recorded their frozen trunk and tuning parts), so none of '
                  f'them can be checked: make sure model.backbone.pretrained is the trunk it was '
                  f'trained with. Checkpoints saved from now on carry the record.',
                  logger='current', level=logging.WARNING)
        return
    note = provenance.compare(provenance.decode(saved, key),
                              backbone.provenance(with_trunk=tuned_only), key,
                              check_trunk=tuned_only,
                              allow_other_trunk=backbone.allow_other_trunk)
    if note:
        print_log(f'{name}: {note}', logger='current', level=logging.WARNING)


def _drop_frozen_trunk(module: nn.Module, state_dict: Dict[str, torch.Tensor], prefix: str,
                       local_metadata: dict) -> None:
    """State-dict hook: leave the frozen trunk out of checkpoints (it comes from `pretrained`)."""
    if module.save_frozen_trunk:
        return
    for key in [k for k in state_dict if k.startswith(prefix + 'trunk.')]:
        del state_dict[key]


def _add_provenance(module: nn.Module, state_dict: Dict[str, torch.Tensor], prefix: str,
                    local_metadata: dict) -> None:
    """State-dict hook: add the provenance record (trunk sha256, layout, parts) as a uint8
    tensor under ``<prefix>provenance``."""
    state_dict[prefix + PROVENANCE_KEY] = provenance.encode(module.provenance())


def check_tensors(state_dict: Dict[str, torch.Tensor], prefix: str,
                  expected: Dict[str, torch.Tensor], what: str, likely: str,
                  extra_ok: Tuple[str, ...] = ()) -> None:
    """Raise if ``state_dict`` lacks, adds or reshapes any of ``expected`` under ``prefix``."""
    diff = diff_state_dict(state_dict, expected, prefix,
                           ignore_extra=lambda name: name.startswith(extra_ok))
    if diff.in_model_order:
        m = diff.in_model_order[0]
        if m.kind == 'missing':
            raise TrunkWeightsError(
                f'the checkpoint has no `{m.key}` ({m.model}), which {what} need: it looks like '
                f'{likely}')
        raise TrunkWeightsError(
            f'`{m.key}` has shape {m.saved} in the checkpoint but {m.model} in the model: it '
            f'looks like {likely}')
    if diff.extra:
        raise TrunkWeightsError(
            f'the checkpoint has `{diff.extra[0].key}`, which this model does not have '
            f'({len(diff.extra)} such keys): it looks like {likely}')
