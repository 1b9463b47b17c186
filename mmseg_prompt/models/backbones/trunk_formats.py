"""Recognise a trunk file's format and turn it into the state dict timm's converters read.

Three formats reach the frozen trunk:

- **timm** (the model's own ``state_dict``, e.g. ``timm/<model>`` on the Hugging Face hub): kept
  as it is.
- **Meta's release files** (``dinov2_vit*14*_pretrain.pth``, ``dinov3_vit*16_pretrain_*.pth``):
  the module names of facebookresearch/dinov2 and facebookresearch/dinov3. timm's own
  ``checkpoint_filter_fn`` converts them (``vision_transformer`` for DINOv2, ``eva`` for
  DINOv3); this module only checks them first: architecture, the q/k/v biases and
  ``qkv.bias_mask`` (which timm's filters drop silently), and the RoPE periods.
- **Hugging Face transformers** (a ``save_pretrained`` folder with ``config.json`` and
  ``model.safetensors``, or that file alone): ``Dinov2WithRegistersModel`` / ``Dinov2Model``
  and ``DINOv3ViTModel``. No converter to timm exists, so :func:`hf_to_meta` renames them into
  Meta's layout (q/k/v projections concatenated into ``qkv``, ``lambda1`` into ``ls*.gamma``,
  gated MLPs into ``w12`` / ``w1 w2 w3``), and timm's filter takes it from there.

Nothing is resampled or dropped without a word: another patch size is refused (timm's filters
would resample the patch embedding), a bias the timm model has no place for is dropped only
when it is all zero (and logged), and a file of another architecture is refused naming the
key or ``config.json`` field, both values and the option to change.
"""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from safetensors.torch import load_file
from timm import is_model
from timm.models.eva import Eva

TIMM = 'timm'
META_DINOV2 = 'Meta DINOv2'
META_DINOV3 = 'Meta DINOv3'
HF_DINOV2 = 'Hugging Face DINOv2'
HF_DINOV3 = 'Hugging Face DINOv3'

HF_MODEL_TYPES = {'dinov2': HF_DINOV2, 'dinov2_with_registers': HF_DINOV2,
                  'dinov3_vit': HF_DINOV3}
HF_WEIGHTS = 'model.safetensors'
HF_INDEX = 'model.safetensors.index.json'


class TrunkWeightsError(ValueError):
    """A pretrained file that is missing or does not fit the trunk it is loaded into."""


# ---------------------------------------------------------------------------- reading
def read_hf_folder(folder: Path) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """The tensors and ``config.json`` of a ``save_pretrained`` folder (one file or shards)."""
    config = read_config(folder / 'config.json')
    if (folder / HF_WEIGHTS).is_file():
        return load_file(str(folder / HF_WEIGHTS)), config
    if (folder / HF_INDEX).is_file():
        shards = sorted(set(json.loads((folder / HF_INDEX).read_text())['weight_map'].values()))
        state_dict: Dict[str, torch.Tensor] = {}
        for shard in shards:
            state_dict.update(load_file(str(folder / shard)))
        return state_dict, config
    raise TrunkWeightsError(
        f'{folder} is a folder without {HF_WEIGHTS} (or {HF_INDEX}): give a Hugging Face '
        f'`save_pretrained` folder, or the checkpoint file itself, as `pretrained` / '
        f'`init_cfg.checkpoint`.')


def read_config(path: Path) -> Optional[dict]:
    """A Hugging Face ``config.json`` as a dict; None when there is none."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise TrunkWeightsError(f'could not read {path} as JSON: {e}') from e


# ---------------------------------------------------------------------------- recognising
def detect_format(state_dict: Dict[str, torch.Tensor], config: Optional[dict]) -> str:
    """The format of a checkpoint: by ``config.json``'s ``model_type``, else by its keys."""
    if config is not None and 'model_type' in config:
        model_type = config['model_type']
        if model_type not in HF_MODEL_TYPES:
            raise TrunkWeightsError(
                f'config.json has model_type {model_type!r}; the trunk reads the Hugging Face '
                f'models {sorted(HF_MODEL_TYPES)} (DINOv2, DINOv3 ViTs). Convert the file to '
                f'timm, or give the timm checkpoint of the trunk.')
        return HF_MODEL_TYPES[model_type]
    cls = [k for k in state_dict if k.endswith('embeddings.cls_token')]
    if cls:
        prefix = cls[0][:-len('embeddings.cls_token')]
        return HF_DINOV2 if f'{prefix}embeddings.position_embeddings' in state_dict \
            else HF_DINOV3
    if 'storage_tokens' in state_dict or 'rope_embed.periods' in state_dict:
        return META_DINOV3
    if 'mask_token' in state_dict and 'blocks.0.attn.qkv.weight' in state_dict:
        return META_DINOV2
    return TIMM


# ---------------------------------------------------------------------------- HF -> Meta
@dataclass
class Converted:
    """A state dict in Meta's layout and, per key, the file's key(s) it was made from."""
    state_dict: Dict[str, torch.Tensor]
    origin: Dict[str, Tuple[str, ...]] = field(default_factory=dict)

    def put(self, key: str, value: torch.Tensor, *sources: str) -> None:
        self.state_dict[key] = value
        self.origin[key] = sources or (key,)

    def name(self, key: str) -> str:
        """The file's name of ``key`` (several, joined, when ``key`` was concatenated)."""
        return ' + '.join(repr(s) for s in self.origin.get(key, (key,)))


# HF name (legacy name written by save_pretrained first, transformers' current name second)
# -> Meta name, for the tensors outside the blocks.
HF_DINOV2_TOP = {'embeddings.cls_token': 'cls_token', 'embeddings.mask_token': 'mask_token',
                 'embeddings.position_embeddings': 'pos_embed',
                 'embeddings.register_tokens': 'register_tokens',
                 'embeddings.patch_embeddings.projection.weight': 'patch_embed.proj.weight',
                 'embeddings.patch_embeddings.projection.bias': 'patch_embed.proj.bias',
                 'layernorm.weight': 'norm.weight', 'layernorm.bias': 'norm.bias'}
HF_DINOV3_TOP = {'embeddings.cls_token': 'cls_token', 'embeddings.mask_token': 'mask_token',
                 'embeddings.register_tokens': 'storage_tokens',
                 'embeddings.patch_embeddings.weight': 'patch_embed.proj.weight',
                 'embeddings.patch_embeddings.bias': 'patch_embed.proj.bias',
                 'norm.weight': 'norm.weight', 'norm.bias': 'norm.bias'}
# Inside a block: HF name -> Meta name (one to one).
HF_BLOCK_RENAMES = {'norm1.': 'norm1.', 'norm2.': 'norm2.',
                    'attention.output.dense.': 'attn.proj.', 'attention.o_proj.': 'attn.proj.',
                    'layer_scale1.lambda1': 'ls1.gamma', 'layer_scale2.lambda1': 'ls2.gamma'}
HF_QKV = (('attention.attention.query.', 'attention.q_proj.'),
          ('attention.attention.key.', 'attention.k_proj.'),
          ('attention.attention.value.', 'attention.v_proj.'))
# MLPs: plain, DINOv2's packed SwiGLU (legacy names), and gated (gate, up, down).
HF_MLP_PLAIN = {'mlp.fc1.': 'mlp.fc1.', 'mlp.fc2.': 'mlp.fc2.'}  # DINOv2
HF_DINOV3_MLP_PLAIN = {'mlp.up_proj.': 'mlp.fc1.', 'mlp.down_proj.': 'mlp.fc2.'}
HF_DINOV3_MLP_GATED = {'mlp.gate_proj.': 'mlp.w1.', 'mlp.up_proj.': 'mlp.w2.',
                       'mlp.down_proj.': 'mlp.w3.'}
HF_DINOV2_MLP_GATED = {'mlp.weights_in.': 'mlp.w12.', 'mlp.weights_out.': 'mlp.w3.',
                       'mlp.down_proj.': 'mlp.w3.'}


def hf_prefix(state_dict: Dict[str, torch.Tensor]) -> str:
    """The prefix before ``embeddings.`` (``dinov2_with_registers.`` in a classification
    model's file; empty in a base model's)."""
    cls = [k for k in state_dict if k.endswith('embeddings.cls_token')]
    if not cls:
        raise TrunkWeightsError('the Hugging Face file has no `embeddings.cls_token`: it is not '
                                'a DINOv2 / DINOv3 ViT model file')
    return cls[0][:-len('embeddings.cls_token')]


def hf_to_meta(state_dict: Dict[str, torch.Tensor], fmt: str) -> Converted:
    """Rename a Hugging Face DINOv2 / DINOv3 state dict into Meta's release layout.

    Converted: the embeddings (DINOv3 registers become ``storage_tokens``), every block's
    ``q|k|v`` weights concatenated into ``attn.qkv.weight`` and biases into ``attn.qkv.bias``
    (a missing key bias as zeros, the value Meta's ``bias_mask`` gives it), ``o_proj`` into
    ``attn.proj``, ``layer_scale{1,2}.lambda1`` into ``ls{1,2}.gamma``, the MLP (plain
    ``fc1 fc2``; DINOv2's SwiGLU into ``w12 w3`` with the gate first; DINOv3's gated
    ``gate up down`` into ``w1 w2 w3``) and the final norm. Any other key is refused.
    """
    prefix = hf_prefix(state_dict)
    top = HF_DINOV2_TOP if fmt == HF_DINOV2 else HF_DINOV3_TOP
    layer = re.compile(re.escape(prefix) + (r'encoder\.layer\.(\d+)\.(.*)' if fmt == HF_DINOV2
                                            else r'(?:model\.)?layer\.(\d+)\.(.*)'))
    out = Converted({})
    blocks: Dict[int, Dict[str, Tuple[str, torch.Tensor]]] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        match = layer.fullmatch(key)
        if match:
            blocks.setdefault(int(match[1]), {})[match[2]] = (key, value)
        elif key[len(prefix):] in top:
            out.put(top[key[len(prefix):]], value, key)
        elif not key[len(prefix):].startswith('rope_embeddings.'):
            raise TrunkWeightsError(_unknown_key(key, fmt))
    gated = any(n.startswith(('mlp.gate_proj.', 'mlp.weights_in.'))
                for b in blocks.values() for n in b)
    mlp = (HF_DINOV2_MLP_GATED if gated else HF_MLP_PLAIN) if fmt == HF_DINOV2 else \
        (HF_DINOV3_MLP_GATED if gated else HF_DINOV3_MLP_PLAIN)
    for i, tensors in sorted(blocks.items()):
        _block_to_meta(f'blocks.{i}.', tensors, dict(HF_BLOCK_RENAMES, **mlp), fmt, out)
    return out


def _block_to_meta(meta: str, tensors: Dict[str, Tuple[str, torch.Tensor]],
                   renames: Dict[str, str], fmt: str, out: Converted) -> None:
    """One block's tensors (name inside the block -> (file key, tensor)) into ``out``."""
    qkv: Dict[str, List[Optional[Tuple[str, torch.Tensor]]]] = {}
    gate_up: Dict[str, List[Optional[Tuple[str, torch.Tensor]]]] = {}
    for name, (key, value) in tensors.items():
        which = next((i for i, names in enumerate(HF_QKV) if name.startswith(names)), None)
        if which is not None:
            qkv.setdefault(name.rsplit('.', 1)[1], [None] * 3)[which] = (key, value)
        elif fmt == HF_DINOV2 and name.startswith(('mlp.gate_proj.', 'mlp.up_proj.')):
            part = name.rsplit('.', 1)[1]
            gate_up.setdefault(part, [None] * 2)[name.startswith('mlp.up_proj.')] = (key, value)
        else:
            old = next((o for o in renames if name.startswith(o)), None)
            if old is None:
                raise TrunkWeightsError(_unknown_key(key, fmt))
            out.put(meta + renames[old] + name[len(old):], value, key)
    for part, qkv_parts in qkv.items():
        _concat(out, meta + 'attn.qkv.' + part, qkv_parts, allow_missing=part == 'bias')
    for part, halves in gate_up.items():  # DINOv2's packed SwiGLU: gate first, then up
        _concat(out, meta + 'mlp.w12.' + part, halves, allow_missing=False)


def _concat(out: Converted, key: str, parts: List[Optional[Tuple[str, torch.Tensor]]],
            allow_missing: bool) -> None:
    """Concatenate ``parts`` along dim 0 into ``key``; a missing bias part is zeros."""
    present = [p for p in parts if p is not None]
    if len(present) < len(parts) and not allow_missing:
        raise TrunkWeightsError(
            f'the Hugging Face file has {present[0][0]!r} without its {len(parts) - 1} '
            f'companion(s): it is incomplete')
    like = present[0][1]
    values = [p[1] if p is not None else torch.zeros_like(like) for p in parts]
    out.put(key, torch.cat(values), *(p[0] for p in present))


def _unknown_key(key: str, fmt: str) -> str:
    return (f'{key!r} is not part of the {fmt} ViT layout the trunk reads (embeddings, blocks '
            f'with q/k/v/o projections, layer scales and a plain or gated MLP, final norm); '
            f'the file is of another model. Give the timm checkpoint of the trunk instead.')


# ---------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class Fact:
    """One architecture fact of a file: what, its value, the key or field it was read from,
    and the ``model_kwargs`` option that sets it in the timm model."""
    what: str
    value: object
    where: str
    option: str


def _act_name(act: nn.Module) -> str:
    """The Hugging Face ``hidden_act`` name of a timm MLP activation."""
    if isinstance(act, nn.GELU):
        return 'gelu' if act.approximate == 'none' else 'gelu_pytorch_tanh'
    return 'silu' if isinstance(act, nn.SiLU) else type(act).__name__


def model_facts(trunk: nn.Module) -> Dict[str, object]:
    """The timm trunk's architecture facts, by :class:`Fact` ``what``."""
    sd = trunk.state_dict()
    mlp = trunk.blocks[0].mlp
    fc1, fc2 = sd.get('blocks.0.mlp.fc1.weight'), sd.get('blocks.0.mlp.fc2.weight')
    gated = 'blocks.0.mlp.fc1_g.weight' in sd or (
        fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1])
    facts = {'patch size': tuple(sd['patch_embed.proj.weight'].shape[-2:]),
             'width': trunk.embed_dim, 'depth': len(trunk.blocks),
             'register count': sd['reg_token'].shape[1] if 'reg_token' in sd else 0,
             'gated (SwiGLU) MLP': gated, 'head count': trunk.blocks[0].attn.num_heads,
             'LayerNorm eps': trunk.norm.eps if isinstance(trunk.norm, nn.LayerNorm) else None,
             'MLP activation': _act_name(mlp.act) if hasattr(mlp, 'act') else None}
    rope = getattr(trunk, 'rope', None)
    facts['RoPE base'] = getattr(rope, 'temperature', None)
    return facts


def file_facts(conv: Converted, fmt: str, config: Optional[dict], is_eva: bool) -> List[Fact]:
    """The architecture facts of a Meta-layout state dict (and of its ``config.json``)."""
    sd = conv.state_dict
    facts = []
    if 'patch_embed.proj.weight' in sd:
        key = 'patch_embed.proj.weight'
        shape = tuple(sd[key].shape)
        facts += [Fact('patch size', shape[-2:], f'the shape of {conv.name(key)}', 'patch_size'),
                  Fact('width', shape[0], f'the shape of {conv.name(key)}', 'embed_dim')]
    indices = {int(m[1]) for k in sd for m in [re.match(r'blocks\.(\d+)\.', k)] if m}
    if indices:
        last = f'blocks.{max(indices)}.norm1.weight'
        facts.append(Fact('depth', max(indices) + 1, f'{conv.name(last)}, the last block',
                          'depth'))
    reg_key = 'register_tokens' if fmt in (META_DINOV2, HF_DINOV2) else 'storage_tokens'
    facts.append(Fact('register count', sd[reg_key].shape[1] if reg_key in sd else 0,
                      conv.name(reg_key) if reg_key in sd else f'no {reg_key!r} in the file',
                      'num_reg_tokens' if is_eva else 'reg_tokens'))
    w1 = next((k for k in sd if re.fullmatch(r'blocks\.\d+\.mlp\.w12?\.weight', k)), None)
    fc1 = next((k for k in sd if re.fullmatch(r'blocks\.\d+\.mlp\.fc1\.weight', k)), None)
    facts.append(Fact('gated (SwiGLU) MLP', w1 is not None, conv.name(w1 or fc1 or 'mlp'),
                      'swiglu_mlp' if is_eva else 'mlp_layer'))
    if config is not None:
        facts += _config_facts(config, fmt, gated=w1 is not None)
    return facts


def _config_facts(config: dict, fmt: str, gated: bool) -> List[Fact]:
    """Facts only ``config.json`` tells (the tensors' shapes do not)."""
    facts = [Fact('head count', config.get('num_attention_heads'),
                  'config.json num_attention_heads', 'num_heads'),
             Fact('LayerNorm eps', config.get('layer_norm_eps'), 'config.json layer_norm_eps',
                  'norm_layer')]
    if fmt == HF_DINOV2 and gated:  # transformers' DINOv2 SwiGLU is SiLU whatever hidden_act
        facts.append(Fact('MLP activation', 'silu', 'config.json use_swiglu_ffn', 'act_layer'))
    else:
        facts.append(Fact('MLP activation', config.get('hidden_act'), 'config.json hidden_act',
                          'act_layer'))
    if fmt == HF_DINOV3:
        facts.append(Fact('RoPE base', config.get('rope_theta'), 'config.json rope_theta',
                          'rope_temperature'))
    return facts


def check_architecture(facts: List[Fact], trunk: nn.Module, source: str, fmt: str,
                       model_name: str, suggestion: str) -> None:
    """Refuse a file whose architecture differs from the trunk's, fact by fact."""
    model = model_facts(trunk)
    for fact in facts:
        ours = model.get(fact.what)
        if fact.value is None or ours is None:
            continue
        same = abs(float(fact.value) - float(ours)) <= 1e-6 * abs(float(ours)) \
            if isinstance(ours, float) else fact.value == ours
        if not same:
            raise TrunkWeightsError(
                f'{source} is a {fmt} file of another architecture than {model_name}: its '
                f'{fact.what} is {fact.value!r} ({fact.where}), the model\'s is {ours!r}. '
                f'Set `model_name` to the timm model of the file{suggestion}, or change '
                f'`model_kwargs` ({fact.option}).')


def suggest_model(conv: Converted, fmt: str, qv_biases: bool) -> str:
    """', e.g. <timm name>' for the file's facts, when timm has such a model; else ''."""
    sd = conv.state_dict
    if 'patch_embed.proj.weight' not in sd:
        return ''
    width, _, p, _ = sd['patch_embed.proj.weight'].shape
    gated = any(re.match(r'blocks\.\d+\.mlp\.w1', k) for k in sd)
    if fmt in (META_DINOV2, HF_DINOV2):
        size = {384: 'small', 768: 'base', 1024: 'large', 1536: 'giant'}.get(width)
        regs = '_reg4' if 'register_tokens' in sd else ''
        name = f'vit_{size}_patch{p}{regs}_dinov2'
    else:
        size = {384: 'small_plus' if gated else 'small', 768: 'base', 1024: 'large',
                1280: 'huge_plus', 4096: '7b'}.get(width)
        name = f'vit_{size}_patch{p}_dinov3{"_qkvb" if qv_biases else ""}'
    return f', e.g. {name}' if is_model(name) else ''


# ---------------------------------------------------------------------------- biases, RoPE
def effective_qkv_bias(conv: Converted, key: str) -> torch.Tensor:
    """``key``'s q|k|v bias as the model adds it: Meta DINOv3's ``bias_mask`` (1 on the query
    and value thirds, 0 on the key third: dinov3/models/vision_transformer.py, init_weights_vit)
    multiplies it, so the masked key bias is zero in the model whatever the file holds."""
    bias = conv.state_dict[key]
    mask_key = key[:-len('bias')] + 'bias_mask'
    mask = conv.state_dict.pop(mask_key, None)
    if mask is None:
        return bias
    third = bias.shape[0] // 3
    expected = torch.ones_like(mask)
    expected[third:2 * third] = 0
    if not torch.equal(mask.to(expected.dtype), expected):
        raise TrunkWeightsError(
            f'{conv.name(mask_key)} is not Meta\'s key-bias mask (1 on the query and value '
            f'thirds, 0 on the key third): the file adds another bias than DINOv3 does, which '
            f'no timm model reproduces. Use an unmodified DINOv3 release file.')
    return torch.where(mask.bool(), bias, torch.zeros_like(bias))


def settle_qkv_biases(conv: Converted, trunk: nn.Module, source: str, model_name: str,
                      suggestion: str) -> bool:
    """Give every block's q|k|v bias the place the timm trunk has for it, or refuse.

    - timm ViT (``attn.qkv.bias``): all three thirds are kept;
    - timm Eva ``_qkvb`` (``attn.q_bias``, ``attn.v_bias``, no key bias): the key third must be
      zero (timm's filter drops it);
    - no bias place: all-zero biases (the distilled DINOv3 files) are dropped with a log line;
      a nonzero one is refused.
    Returns whether the file has nonzero query or value biases."""
    trunk_keys = trunk.state_dict().keys()
    keys = sorted((k for k in conv.state_dict if re.fullmatch(r'blocks\.\d+\.attn\.qkv\.bias', k)),
                  key=lambda k: int(k.split('.')[1]))
    qv_place = 'blocks.0.attn.q_bias' in trunk_keys
    if not keys and qv_place:
        raise TrunkWeightsError(
            f'{source} has no q/k/v biases, but {model_name} has query and value biases '
            f"('blocks.0.attn.q_bias') that would stay randomly initialised. Use the timm model "
            f'without `_qkvb` in `model_name`{suggestion}.')
    dropped, nonzero_qv = [], False
    for key in keys:
        bias = effective_qkv_bias(conv, key)
        conv.state_dict[key] = bias
        q, k, v = bias.chunk(3)
        nonzero_qv = nonzero_qv or bool(q.any() or v.any())
        if 'blocks.0.attn.qkv.bias' in trunk_keys:
            continue
        if k.any():
            raise TrunkWeightsError(
                f'{source}: {conv.name(key)} has a nonzero key bias (max |value| '
                f'{k.abs().max().item():.3g}), but {model_name} has no key-bias place (timm\'s '
                f'Eva adds query and value biases only); dropping it would change the model. '
                f'Use a file without a key bias, or a timm model with a full qkv bias.')
        if qv_place:
            continue
        if q.any() or v.any():
            raise TrunkWeightsError(
                f'{source}: {conv.name(key)} has nonzero query/value biases (max |value| '
                f'{torch.cat([q, v]).abs().max().item():.3g}), but {model_name} has no q/v bias '
                f'place (no \'{key[:-len("qkv.bias")]}q_bias\'). Use the timm model with '
                f'q/v biases: `model_name` ending in `_qkvb`{suggestion}.')
        dropped.append(key)
    for key in dropped:
        del conv.state_dict[key]
    if dropped:
        names = ', '.join(conv.name(k) for k in dropped[:2])
        print_log(f'{source}: dropped the q/k/v biases of {len(dropped)} blocks ({names}, ...): '
                  f'they are all zero and {model_name} has no bias place, so the model is '
                  f'unchanged', logger='current')
    return nonzero_qv


def check_rope_periods(conv: Converted, trunk: nn.Module, source: str, model_name: str) -> None:
    """Meta DINOv3's ``rope_embed.periods`` (dropped by timm's filter, which computes its own)
    must equal the trunk's RoPE periods."""
    periods = conv.state_dict.get('rope_embed.periods')
    ours = getattr(getattr(trunk, 'rope', None), 'periods', None)
    if periods is None or ours is None:
        return
    if periods.shape != ours.shape or not torch.allclose(periods.float(), ours.float(),
                                                         rtol=1e-5, atol=0):
        raise TrunkWeightsError(
            f'{source}: {conv.name("rope_embed.periods")} {periods.tolist()[:3]}... differs from '
            f'the RoPE periods of {model_name} {ours.tolist()[:3]}...: the file was trained with '
            f'another RoPE base or head size. Check `model_name` and `model_kwargs` '
            f'(rope_temperature, num_heads).')


def check_patch_embedding(state_dict: Dict[str, torch.Tensor], trunk: nn.Module, source: str,
                          model_name: str) -> None:
    """Refuse a patch embedding of another patch size (timm's filters would resample it)."""
    weight = state_dict.get('patch_embed.proj.weight')
    if weight is None or weight.ndim != 4:
        return
    ours = tuple(trunk.patch_embed.proj.weight.shape[-2:])
    if tuple(weight.shape[-2:]) != ours:
        raise TrunkWeightsError(
            f"{source} has patch size {tuple(weight.shape[-2:])} ('patch_embed.proj.weight'), "
            f'{model_name} has '
            f'{ours}: timm would resample the patch embedding, which is another model. Set '
            f'`model_name` (or `model_kwargs` patch_size) to the file\'s patch size.')


# ---------------------------------------------------------------------------- entry point
def to_filter_input(state_dict: Dict[str, torch.Tensor], config: Optional[dict],
                    trunk: nn.Module, source: str, model_name: str) -> Tuple[Dict, str]:
    """Checks a checkpoint of any format against ``trunk`` and returns it in the layout its
    timm ``checkpoint_filter_fn`` reads (timm's own, or Meta's), with its format's name."""
    fmt = detect_format(state_dict, config)
    if fmt == TIMM:
        check_patch_embedding(state_dict, trunk, source, model_name)
        return state_dict, fmt
    conv = hf_to_meta(state_dict, fmt) if fmt in (HF_DINOV2, HF_DINOV3) \
        else Converted(dict(state_dict))
    is_eva = isinstance(trunk, Eva)
    meta_fmt = META_DINOV2 if fmt in (META_DINOV2, HF_DINOV2) else META_DINOV3
    if is_eva != (meta_fmt == META_DINOV3):
        family = 'DINOv3 (timm Eva, RoPE)' if meta_fmt == META_DINOV3 else \
            'DINOv2 (timm VisionTransformer)'
        raise TrunkWeightsError(
            f'{source} is a {fmt} file, a {family} trunk, but {model_name} is a '
            f'{type(trunk).__name__}: set `model_name` to the timm model of the file'
            f'{suggest_model(conv, fmt, qv_biases=False)}.')
    qv_nonzero = any(bool(b[:len(b) // 3].any() or b[2 * len(b) // 3:].any())
                     for k, b in conv.state_dict.items() if k.endswith('attn.qkv.bias'))
    suggestion = suggest_model(conv, fmt, qv_nonzero)
    if suggestion == f', e.g. {model_name}':  # the file is of this model's family: no hint
        suggestion = ''
    check_architecture(file_facts(conv, fmt, config, is_eva), trunk, source, fmt, model_name,
                       suggestion)
    settle_qkv_biases(conv, trunk, source, model_name, suggestion)
    check_rope_periods(conv, trunk, source, model_name)
    return conv.state_dict, fmt
