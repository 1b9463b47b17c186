"""Load a local trunk checkpoint into a timm trunk, strictly, through timm's own loaders.

Formats: whatever timm reads for its ViTs: ``.pth``/``.pt``/``.bin`` state dicts (also wrapped in
``state_dict``/``model``/EMA keys), ``.safetensors``, and the original Google ``.npz`` files;
Meta's DINOv2 / DINOv3 release files; Hugging Face DINOv2 / DINOv3 folders (``config.json`` and
``model.safetensors``) or their ``model.safetensors`` alone (``trunk_formats.py`` recognises and
checks them). The state dict goes through the model family's ``checkpoint_filter_fn`` (key
conversion, position-embedding resampling to the trunk's ``img_size`` grid), then every trunk
key must be present with the right shape: a load that would leave trunk weights at their random
initialisation is an error, never a warning.
"""
import importlib
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Union

import torch
import torch.nn as nn
from timm.models import load_state_dict, model_entrypoint

from ...utils.checkpoint_files import DamagedCheckpointError, check_checkpoint_file
from ..utils.state_dict_diff import diff_state_dict
from .trunk_formats import (HF_WEIGHTS, TIMM, TrunkWeightsError, read_config, read_hf_folder,
                            to_filter_input)

# Keys of the classification head: the trunk is built with num_classes=0, so they are dropped.
HEAD_PREFIXES = ('head.', 'head_dist.', 'fc_norm.')


def _filter_fn(model_name: str) -> Optional[Callable]:
    """The ``checkpoint_filter_fn`` of the timm module that defines ``model_name``."""
    module = importlib.import_module(model_entrypoint(model_name).__module__)
    return getattr(module, 'checkpoint_filter_fn', None)


def _strip_prefix(state_dict: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    if not prefix:
        return state_dict
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        raise TrunkWeightsError(f'no key of the checkpoint starts with prefix {prefix!r}')
    return out


def check_fits(trunk: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Union[str, Path],
               model_name: str) -> None:
    """Raise TrunkWeightsError naming the first trunk key that the checkpoint does not fill."""
    diff = diff_state_dict(state_dict, trunk.state_dict(),
                           ignore_extra=lambda name: name.startswith(HEAD_PREFIXES))
    if diff.in_model_order:
        m = diff.in_model_order[0]
        if m.kind == 'missing':
            raise TrunkWeightsError(
                f'{path} does not fit {model_name}: it has no {m.key!r} (shape {m.model}), which '
                f'would stay randomly initialised. Check that `model_name` names the '
                f'architecture the file was trained with.')
        raise TrunkWeightsError(
            f'{path} does not fit {model_name}: {m.key!r} has shape {m.saved} in the file but '
            f'{m.model} in the model. Check `model_name` and `model_kwargs` (width, depth, patch '
            f'size) against the checkpoint.')
    if diff.extra:
        raise TrunkWeightsError(
            f'{path} does not fit {model_name}: the file has {diff.extra[0].key!r} (and '
            f'{len(diff.extra) - 1} more keys) that the model lacks, e.g. more blocks or another '
            f'layout. Check `model_name` and `model_kwargs` against the checkpoint.')


def load_trunk_weights(trunk: nn.Module, path: Union[str, Path], model_name: str,
                       prefix: str = '') -> None:
    """Load ``path`` into ``trunk`` (a timm ViT built with ``model_name``), all keys or an error.

    Args:
        trunk: the timm model, built with ``num_classes=0``.
        path: local checkpoint file, or a Hugging Face ``save_pretrained`` folder.
        model_name: the timm name the trunk was built from (it selects the checkpoint filter).
        prefix: keep only keys starting with it and strip it (e.g. ``'backbone.trunk.'``).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        state_dict, config = read_hf_folder(path)
        _load_state_dict(trunk, state_dict, config, path, model_name, prefix)
        return
    if not path.is_file():
        raise TrunkWeightsError(
            f'pretrained trunk file not found: {path}. Put the checkpoint of {model_name} there '
            f'(timm .pth, .safetensors or Google .npz, a Meta DINOv2/DINOv3 .pth, or a Hugging '
            f'Face folder) or fix the `pretrained` / `init_cfg.checkpoint` path; nothing is '
            f'downloaded at run time.')
    if path.suffix == '.npz':
        if prefix:
            raise TrunkWeightsError(f'{path}: `prefix` is not supported for .npz checkpoints')
        if not hasattr(trunk, 'load_pretrained'):
            raise TrunkWeightsError(f'{path}: {type(trunk).__name__} cannot read .npz checkpoints')
        try:
            # timm's reader of the Google checkpoints; it reads every tensor the model has and
            # resamples the position embedding, so a missing key is a KeyError.
            trunk.load_pretrained(str(path))
        except (KeyError, ValueError, RuntimeError) as e:
            raise TrunkWeightsError(f'{path} does not fit {model_name}: {e}') from e
        return
    if path.suffix != '.safetensors':
        try:
            check_checkpoint_file(str(path), what='pretrained trunk file', fix=(
                f'Use the timm checkpoint of {model_name} (.pth, .safetensors or Google .npz) '
                f'in `pretrained` / `init_cfg.checkpoint`.'))
        except DamagedCheckpointError as e:
            raise TrunkWeightsError(str(e)) from e
    try:
        state_dict = load_state_dict(str(path), weights_only=True)
    except Exception as e:  # unreadable or not a checkpoint at all
        raise TrunkWeightsError(f'could not read {path} as a checkpoint: {e}') from e
    # a hub snapshot's model.safetensors: its config.json beside it tells the architecture
    config = read_config(path.with_name('config.json')) if path.name == HF_WEIGHTS else None
    _load_state_dict(trunk, state_dict, config, path, model_name, prefix)


def _load_state_dict(trunk: nn.Module, state_dict: Dict[str, torch.Tensor],
                     config: Optional[dict], path: Path, model_name: str, prefix: str) -> None:
    """Convert a read checkpoint (any format) to ``trunk``'s timm keys and load it, strictly."""
    state_dict = _strip_prefix(state_dict, prefix)
    state_dict, fmt = to_filter_input(state_dict, config, trunk, str(path), model_name)
    filter_fn = _filter_fn(model_name)
    if filter_fn is not None:
        try:
            state_dict = filter_fn(state_dict, trunk)
        except Exception as e:
            raise TrunkWeightsError(
                f'{path} ({fmt} format) does not fit {model_name}: timm could not convert it '
                f'({e})') from e
    elif fmt != TIMM:
        raise TrunkWeightsError(f'{path} is a {fmt} file, but timm has no converter for '
                                f'{model_name}: give the timm checkpoint of the trunk')
    check_fits(trunk, state_dict, path, model_name)
    expected = trunk.state_dict().keys()
    trunk.load_state_dict({k: v for k, v in state_dict.items() if k in expected})
