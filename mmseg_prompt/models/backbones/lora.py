"""LoRA (Hu et al., ICLR 2022): low-rank deltas on the frozen trunk's linear layers.

For a frozen Linear h = W x + b (W: out x in) and a target of it (docs/methods.md, "LoRA"):

    h' = W x + b + s B A dropout(x),    A: r x in,  B: out x r,  s = alpha / r

A is initialised as peft's LoRA (kaiming-uniform, a = sqrt(5)) and B to zero, so the start
equals the trunk. The delta is added to the Linear's output by a forward hook: the trunk's
tensors never change and timm's own block forward runs, so LoRA combines with every other part.

Targets, per block: ``'qkv'`` (one LoRA on the fused q/k/v Linear, what peft does with
``target_modules=['qkv']`` on a timm ViT), or some of ``'q'``, ``'k'``, ``'v'`` (a LoRA of its
own on that third of the fused Linear's output, as the LoRA paper's W_q and W_v); ``'proj'``
(attention output), ``'fc1'`` and ``'fc2'`` (the MLP).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS

from .attention_projections import hooked_qkv
from .block_indices import normalise_indices
from .tuning_part import TuningPart

_QKV_THIRDS = ('q', 'k', 'v')
_LINEARS = dict(qkv=('attn', 'qkv'), proj=('attn', 'proj'), fc1=('mlp', 'fc1'),
                fc2=('mlp', 'fc2'))
TARGETS = ('qkv',) + _QKV_THIRDS + ('proj', 'fc1', 'fc2')


@MODELS.register_module()
class LoRA(TuningPart):
    """LoRA deltas on chosen linear layers of chosen blocks, a part of :class:`FrozenViT`.

    Args:
        depth: the trunk's (the backbone passes it).
        rank: r.
        alpha: the scale numerator; s = alpha / r (peft's ``lora_alpha``). None: alpha = r.
        dropout: dropout on the Linear's input x before A (training only; peft's
            ``lora_dropout``).
        targets: which linear layers of each block (module docstring).
        blocks: which blocks (negative: from the end); None: all.

    Parameters ``lora_A.<block>_<target>`` (r, in) and ``lora_B.<block>_<target>`` (out, r).
    """

    NAME = 'lora'
    TRUNK_ARGS = ('depth',)
    METHOD = 'LoRA'
    MERGES_INTO_TRUNK = True

    def __init__(self, depth: int, rank: int = 8, alpha: Optional[float] = None,
                 dropout: float = 0.0, targets: Sequence[str] = ('q', 'v'),
                 blocks: Optional[Sequence[int]] = None):
        super().__init__()
        targets = tuple(targets)
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not targets or len(set(targets)) != len(targets):
            raise ValueError(f'LoRA targets must be distinct names of {TARGETS}; got '
                             f'{list(targets)} (model.backbone.parts, type="LoRA")')
        if 'qkv' in targets and set(targets) & set(_QKV_THIRDS):
            raise ValueError(f'LoRA targets {list(targets)}: give either "qkv" (one LoRA on the '
                             f'fused Linear) or some of "q", "k", "v" (one each), not both')
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f'LoRA rank must be an int >= 1, got {rank!r}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'LoRA dropout must be in [0, 1), got {dropout}')
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / rank
        self.targets = targets
        self.blocks = tuple(range(depth)) if blocks is None else \
            normalise_indices(blocks, depth, 'LoRA blocks')
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()

    @staticmethod
    def key(block: int, target: str) -> str:
        return f'{block}_{target}'

    def attach(self, trunk: nn.Module, model_name: str) -> None:
        """Create A and B for each target of the chosen blocks and hook their Linears (one hook
        per Linear, for all its targets)."""
        for i in self.blocks:
            hooked: Dict[int, Tuple[nn.Linear, List[Tuple[str, int, int]]]] = {}
            for target in self.targets:
                linear, start, width = _target_rows(trunk.blocks[i], target, i, model_name)
                a = torch.empty(self.rank, linear.in_features)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                self.lora_A[self.key(i, target)] = nn.Parameter(a)
                self.lora_B[self.key(i, target)] = nn.Parameter(torch.zeros(width, self.rank))
                hooked.setdefault(id(linear), (linear, []))[1].append((target, start, width))
            for linear, slices in hooked.values():
                self.register_output_hook(linear, _add_lora, block=i,
                                          slices=tuple(sorted(slices, key=_start)))

    def delta(self, block: int, target: str, x: torch.Tensor) -> torch.Tensor:
        """s B A x for ``target`` of ``block``: x (..., in) -> (..., out of the target)."""
        key = self.key(block, target)
        a, b = self.lora_A[key], self.lora_B[key]
        return F.linear(F.linear(x, a.to(x.dtype)), b.to(x.dtype)) * self.scaling

    def merge_into(self, trunk: nn.Module) -> None:
        """W[target rows] += s B A for every target: the trunk alone then computes trunk+LoRA."""
        with torch.no_grad():
            for i in self.blocks:
                for target in self.targets:
                    linear, start, width = _target_rows(trunk.blocks[i], target, i, '')
                    key = self.key(i, target)
                    w = self.lora_B[key] @ self.lora_A[key] * self.scaling
                    linear.weight[start:start + width] += w.to(linear.weight.dtype)

    def weights_layout(self) -> dict:
        return dict(rank=self.rank, alpha=self.alpha, targets=list(self.targets),
                    blocks=list(self.blocks))

    def extra_repr(self) -> str:
        return f'rank={self.rank}, alpha={self.alpha}, targets={self.targets}'


def _start(piece: Tuple[str, int, int]) -> int:
    return piece[1]


def _target_rows(block: nn.Module, target: str, index: int,
                 model_name: str) -> Tuple[nn.Linear, int, int]:
    """The Linear that ``target`` of block ``index`` lives in, and the first output row and the
    number of rows the target's delta covers (a third of the fused qkv for 'q', 'k', 'v')."""
    if target in _QKV_THIRDS:
        linear = _find_linear(block, 'qkv', index, model_name)
        width = linear.out_features // 3
        return linear, _QKV_THIRDS.index(target) * width, width
    linear = _find_linear(block, target, index, model_name)
    return linear, 0, linear.out_features


def _find_linear(block: nn.Module, name: str, index: int, model_name: str) -> nn.Linear:
    parent, child = _LINEARS[name]
    linear = getattr(getattr(block, parent, None), child, None)
    if not isinstance(linear, nn.Linear):
        raise ValueError(f'LoRA target {name!r}: block {index} of {model_name} has no '
                         f'{parent}.{child} Linear; pick targets of {TARGETS} that it has')
    # the fused qkv Linear of an Eva attention is set to run its hooks (attention_projections)
    return hooked_qkv(block.attn) if name == 'qkv' else linear


def _add_lora(module: nn.Linear, inputs, output: torch.Tensor, *, part: LoRA, block: int,
              slices: Tuple[Tuple[str, int, int], ...]) -> torch.Tensor:
    """Forward hook: the Linear's output plus s B A dropout(x) on each target's rows."""
    x = part.dropout(inputs[0])
    if len(slices) == 1 and slices[0][2] == output.shape[-1]:  # the whole output
        return output + part.delta(block, slices[0][0], x)
    pieces, at = [], 0
    for target, start, width in slices:  # in q, k, v order
        if start > at:
            pieces.append(output.new_zeros(*output.shape[:-1], start - at))
        pieces.append(part.delta(block, target, x))
        at = start + width
    if at < output.shape[-1]:
        pieces.append(output.new_zeros(*output.shape[:-1], output.shape[-1] - at))
    return output + torch.cat(pieces, dim=-1)
