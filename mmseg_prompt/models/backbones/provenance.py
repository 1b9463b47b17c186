"""Where a tuned-only checkpoint comes from, written into it and checked when it is loaded.

A tuned-only checkpoint is meaningful only with the frozen trunk, the backbone type and the
prompt layout it was trained with, and none of them is in its tensors' names or shapes: a CVPT
checkpoint fits a VPT-Deep model key for key, and another trunk file of the same architecture
fits shape for shape. So the backbone writes a small record into its state dict, under
``<prefix>provenance`` (a uint8 tensor (L,) holding UTF-8 JSON), which every loading path hands
back to the backbone's ``_load_from_state_dict``:

    {"format": 1, "backbone": "CVPTViT", "model_name": ..., "img_size": [h, w],
     "trunk": {"sha256": ..., "source": ...}, "layout": {"num_prompts": [...], ...}}

``trunk.sha256`` is :func:`tensors_sha256` of the frozen trunk tensors in the model (names,
shapes, dtypes, bytes), the digest ``FrozenTrunkCheckHook`` logs. ``layout`` holds the backbone
options that give the tuned weights their meaning, by config key.
"""
import hashlib
import json
from typing import Iterable, Optional, Tuple

import torch

PROVENANCE_KEY = 'provenance'
FORMAT = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not belong to the model it is loaded into."""


def tensors_sha256(named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of (name, tensor) pairs, in order."""
    h = hashlib.sha256()
    for name, t in named_tensors:
        t = t.detach().cpu().contiguous()
        h.update(f'{name}:{tuple(t.shape)}:{t.dtype};'.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def encode(record: dict) -> torch.Tensor:
    """The record as a uint8 tensor (L,) of UTF-8 JSON."""
    return torch.tensor(list(json.dumps(record, sort_keys=True).encode()), dtype=torch.uint8)


def normalise(record: dict) -> dict:
    """The record as it reads back from a checkpoint (tuples become lists)."""
    return json.loads(json.dumps(record, sort_keys=True))


def decode(tensor: torch.Tensor, key: str) -> dict:
    """The record of a checkpoint's ``key`` tensor; an error if it is not one."""
    try:
        record = json.loads(bytes(tensor.detach().cpu().to(torch.uint8).tolist()).decode())
    except (AttributeError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointMismatchError(
            f'`{key}` in the checkpoint is not a provenance record ({e}): the checkpoint was '
            f'not written by mmseg-prompt, or was edited') from e
    if not isinstance(record, dict) or record.get('format', 0) > FORMAT:
        raise CheckpointMismatchError(
            f'`{key}` in the checkpoint has provenance format {record.get("format")!r}; this '
            f'mmseg-prompt reads format {FORMAT}: update mmseg-prompt')
    return record


# Layout keys a backbone type gained after some of its checkpoints were written: such a
# checkpoint had the default (no guided blocks, no bias tuning).
LAYOUT_DEFAULTS = dict(guided_blocks=[], bias_tuning=False)


def compare(saved: dict, current: dict, key: str, check_trunk: bool,
            allow_other_trunk: bool) -> Optional[str]:
    """Raise :class:`CheckpointMismatchError` if the checkpoint's record ``saved`` names another
    backbone type, another layout or (``check_trunk``) another frozen trunk than the model's
    ``current`` one. Returns a warning when another trunk is accepted (``allow_other_trunk``)."""
    current = normalise(current)
    if saved.get('backbone') != current['backbone']:
        raise CheckpointMismatchError(
            f'the checkpoint was trained with a {saved.get("backbone")} backbone, but this '
            f'config builds {current["backbone"]} (model.backbone.type; `{key}`). Another '
            f'method\'s tuned weights mean something else even where their shapes fit: load it '
            f'with the config it was trained with (model.backbone.type='
            f'\'{saved.get("backbone")}\')')
    old = dict(LAYOUT_DEFAULTS, **saved.get('layout', {}))
    new = dict(LAYOUT_DEFAULTS, **current['layout'])
    differ = [f'model.backbone.{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} in this '
              f'config' for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differ:
        raise CheckpointMismatchError(
            f'the checkpoint was trained with other {current["backbone"]} options than this '
            f'config\'s ({"; ".join(differ)}; `{key}`): load it with the config it was trained '
            f'with, or set these keys to the checkpoint\'s values')
    old, new = saved.get('trunk') or {}, current['trunk']
    if not check_trunk or old.get('sha256') == new['sha256']:
        return None
    text = (f'the checkpoint was trained with the frozen trunk loaded from {old.get("source")} '
            f'({saved.get("model_name")}, sha256 {str(old.get("sha256"))[:16]}), but this '
            f'model\'s frozen trunk, loaded from {new["source"]} ({current["model_name"]}), has '
            f'sha256 {new["sha256"][:16]}')
    if saved.get('img_size') != current['img_size']:
        text += (f'; model.backbone.img_size also differs ({saved.get("img_size")} in the '
                 f'checkpoint, {current["img_size"]} here), and it resamples the trunk\'s '
                 f'position embedding')
    if allow_other_trunk:
        return (f'model.backbone.allow_other_trunk=True: {text}. The tuned weights are used '
                f'with this other trunk on purpose')
    raise CheckpointMismatchError(
        f'{text}. The tuned weights were fitted to the first trunk. Set '
        f'model.backbone.pretrained to the trunk file the checkpoint was trained with, or pass '
        f'--cfg-options model.backbone.allow_other_trunk=True to use this trunk on purpose')
