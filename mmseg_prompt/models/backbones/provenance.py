"""Where a tuned-only checkpoint comes from, written into it and checked when it is loaded.

A tuned-only checkpoint is meaningful only with the frozen trunk and the tuning parts it was
trained with, and neither is in its tensors' names or shapes: a CVPT checkpoint fits a VPT-Deep
model key for key, and another trunk file of the same architecture fits shape for shape. So the
backbone writes a small record into its state dict, under ``<prefix>provenance`` (a uint8
tensor (L,) holding UTF-8 JSON), which every loading path hands back to the backbone's
``_load_from_state_dict`` (docs/user_guides/checkpoints.md):

    {"format": 2, "backbone": "CVPTViT", "model_name": ..., "img_size": [h, w],
     "trunk": {"sha256": ..., "source": ...},
     "layout": {"out_indices": [...], "final_norm": false},
     "parts": {"prompts": {"type": "CrossAttentionPrompts",
                           "layout": {"num_prompts": [...], "guided_blocks": []}},
               "kv_bias": {"type": "KVBiasDeltas", "layout": {}}}}

``trunk.sha256`` is :func:`tensors_sha256` of the frozen trunk tensors in the model (names,
shapes, dtypes, bytes), the digest ``FrozenTrunkCheckHook`` logs. ``layout`` holds the backbone's
own options that give the tuned weights their meaning (which blocks feed the neck); ``parts``
each tuning part under its ``NAME``: its type and its ``weights_layout()``. The parts, not the
backbone's class name, say what the weights are: ``CVPTViT(...)`` and
``FrozenViT(prompts=dict(type='CrossAttentionPrompts', ...))`` are one model and load each
other's checkpoints (``backbone`` is kept for the messages only).

Format 1 (before the parts were recorded) named the backbone class and held every part's options
in one flat ``layout``; :func:`upgrade` reads it in format 2's terms, so those checkpoints load.
"""
import hashlib
import json
from typing import Iterable, Optional, Tuple

import torch

PROVENANCE_KEY = 'provenance'
FORMAT = 2


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


# Format 1: what each registered backbone class's prompts were, and which flat layout keys
# belonged to which part. This describes checkpoints already written and never grows: a part
# added since is recorded in format 2's terms.
_FORMAT1_PROMPTS = dict(VPTDeepViT='SequencePrompts', DAVPTViT='SequencePrompts',
                        CVPTViT='CrossAttentionPrompts')
_FORMAT1_PROMPT_KEYS = ('num_prompts', 'guided_blocks')
_FORMAT1_NESTED = dict(lora='LoRA', adaptformer='AdaptFormer')  # layout key = part NAME
_FEATURE_KEYS = ('out_indices', 'final_norm')


def upgrade(record: dict) -> dict:
    """A record of any format in format 2's terms (a format-1 record's prompt part has type None
    when its backbone class, ``FrozenViT``, does not say which prompt part it had)."""
    if record.get('format', 1) >= 2:
        return record
    flat = dict(record.get('layout', {}))
    parts = {}
    if 'num_prompts' in flat:
        layout = {k: flat.pop(k) for k in _FORMAT1_PROMPT_KEYS if k in flat}
        layout.setdefault('guided_blocks', [])  # the key came after the first checkpoints
        parts['prompts'] = dict(type=_FORMAT1_PROMPTS.get(record.get('backbone')),
                                layout=layout)
    if flat.pop('bias_tuning', False):
        parts['kv_bias'] = dict(type='KVBiasDeltas', layout={})
    for name, part_type in _FORMAT1_NESTED.items():
        if name in flat:
            parts[name] = dict(type=part_type, layout=flat.pop(name))
    features = {k: flat.pop(k) for k in _FEATURE_KEYS if k in flat}
    return dict(record, format=2, layout=dict(features, **flat), parts=parts)


def compare(saved: dict, current: dict, key: str, check_trunk: bool,
            allow_other_trunk: bool) -> Optional[str]:
    """Raise :class:`CheckpointMismatchError` if the checkpoint's record ``saved`` (any format)
    names other tuning parts, other options of them or of the features, or (``check_trunk``)
    another frozen trunk than the model's ``current`` one. Returns a warning when something is
    accepted that could not be checked (another trunk with ``allow_other_trunk``, a format-1
    record that does not name its prompt part's type)."""
    saved, current = normalise(upgrade(saved)), normalise(current)
    notes = []
    _compare_parts(saved, current, key, notes)
    _compare_features(saved, current, key)
    note = _compare_trunk(saved, current, check_trunk, allow_other_trunk)
    return '; '.join(notes + ([note] if note else [])) or None


def _compare_parts(saved: dict, current: dict, key: str, notes: list) -> None:
    old, new = saved.get('parts', {}), current['parts']
    others, differ = [], []
    for name in sorted(set(old) | set(new)):
        o, n = old.get(name), new.get(name)
        if o is None or n is None or o['type'] not in (None, n['type']):
            others.append(f'`backbone.{name}`: {_part(o)} in the checkpoint, {_part(n)} in this '
                          f'config')
            continue
        if o['type'] is None:
            notes.append(f'the checkpoint\'s record (format 1, a {saved.get("backbone")} '
                         f'backbone) does not say which prompt part `backbone.{name}` is; it is '
                         f'loaded as this config\'s {n["type"]}')
        differ += [f'{n["type"]} `{name}` {k}: {o["layout"].get(k)!r} in the checkpoint, '
                   f'{n["layout"].get(k)!r} in this config'
                   for k in sorted(set(o['layout']) | set(n['layout']))
                   if o['layout'].get(k) != n['layout'].get(k)]
    if others:
        raise CheckpointMismatchError(
            f'the checkpoint was trained with other tuning parts than this config builds '
            f'({"; ".join(others)}; saved from a {saved.get("backbone")} backbone, this config '
            f'builds {current["backbone"]}; `{key}`). Another method\'s tuned weights mean '
            f'something else even where their shapes fit: load it with the config it was '
            f'trained with (model.backbone.type and its prompts / parts)')
    if differ:
        raise CheckpointMismatchError(
            f'the checkpoint was trained with other tuning-part options than this config\'s '
            f'({"; ".join(differ)}; `{key}`): load it with the config it was trained with, or '
            f'set these options of model.backbone (its prompts / parts, or the method\'s own '
            f'keys such as num_prompts) to the checkpoint\'s values')


def _part(record: Optional[dict]) -> str:
    if record is None:
        return 'no such part'
    return f'a {record["type"] or "prompt"} part'


def _compare_features(saved: dict, current: dict, key: str) -> None:
    old, new = saved.get('layout', {}), current['layout']
    differ = [f'model.backbone.{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} in this '
              f'config' for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differ:
        raise CheckpointMismatchError(
            f'the checkpoint was trained with other {current["backbone"]} options than this '
            f'config\'s ({"; ".join(differ)}; `{key}`): load it with the config it was trained '
            f'with, or set these keys to the checkpoint\'s values')


def _compare_trunk(saved: dict, current: dict, check_trunk: bool,
                   allow_other_trunk: bool) -> Optional[str]:
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
