"""AdaptFormer (Chen et al., NeurIPS 2022): a bottleneck MLP beside each block's frozen MLP.

Per block l, with x the stream after the self-attention sum (docs/methods.md, "AdaptFormer"):

    x_out = x + DropPath(MLP(LN2(x))) + s * W_up Dropout(ReLU(W_down x + b_down)) + s * b_up

the official code's parallel adapter (``ffn_option='parallel'``, no adapter LayerNorm): W_down
(D -> k) kaiming-uniform (a = sqrt(5)), W_up (k -> D) and both biases zero, so the start equals the
trunk; k = 64, s = 0.1 and dropout 0.1 are the official defaults. The adapter reads x before the
LayerNorm and adds beside the MLP (``TuningPart.beside_mlp``), so its blocks run step by step.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS

from .block_indices import normalise_indices
from .block_steps import Branch, check_steppable
from .trunk_families import family_of
from .tuning_part import TuningPart


class BottleneckAdapter(nn.Module):
    """x (..., D) -> s * up(Dropout(ReLU(down(x)))) (..., D), zero at init."""

    def __init__(self, dim: int, bottleneck: int, scale: float, dropout: float):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.scale = scale
        self.dropout = dropout
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.down(x)), p=self.dropout, training=self.training)
        return self.up(h) * self.scale


@MODELS.register_module()
class AdaptFormer(TuningPart):
    """AdaptFormer's parallel adapters, a part of :class:`FrozenViT`.

    Args:
        embed_dim, depth: the trunk's (the backbone passes them).
        bottleneck: k, the adapter's hidden width (official: 64).
        scale: s (official: 0.1).
        dropout: on the adapter's hidden units, training only (official: 0.1).
        blocks: which blocks get an adapter (negative: from the end); None: all.

    Parameters ``adapters.<block>.down.{weight,bias}`` and ``adapters.<block>.up.{weight,bias}``.
    """

    NAME = 'adaptformer'
    METHOD = 'AdaptFormer'

    def __init__(self, embed_dim: int, depth: int, bottleneck: int = 64, scale: float = 0.1,
                 dropout: float = 0.1, blocks: Optional[Sequence[int]] = None):
        super().__init__()
        if not (isinstance(bottleneck, int) and bottleneck >= 1):
            raise ValueError(f'AdaptFormer bottleneck must be an int >= 1, got {bottleneck!r}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'AdaptFormer dropout must be in [0, 1), got {dropout}')
        self.bottleneck = bottleneck
        self.scale = float(scale)
        self.blocks = tuple(range(depth)) if blocks is None else \
            normalise_indices(blocks, depth, 'AdaptFormer blocks')
        self.adapters = nn.ModuleDict({str(i): BottleneckAdapter(embed_dim, bottleneck,
                                                                 self.scale, dropout)
                                       for i in self.blocks})
        # the adapter of each block, None where it has none (no str(index) in the forward)
        self.block_keys = [str(i) if i in self.blocks else None for i in range(depth)]

    def attach(self, trunk: nn.Module, model_name: str) -> None:
        """The adapter adds beside the MLP of a block run step by step: check that each adapted
        block can be."""
        family = family_of(trunk, model_name)
        for i in self.blocks:
            check_steppable(trunk.blocks[i], i, model_name, family, 'AdaptFormer',
                            'leave this block out of AdaptFormer\'s blocks')

    def beside_mlp(self, index: int, block: nn.Module) -> Optional[Branch]:
        key = self.block_keys[index]
        if key is None:
            return None
        return self.adapters[key]

    def weights_layout(self) -> dict:
        return dict(bottleneck=self.bottleneck, scale=self.scale, blocks=list(self.blocks))
