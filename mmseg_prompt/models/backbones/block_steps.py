"""A timm ViT or Eva block run step by step, with branches added at its two residual sums.

timm's ``Block.forward`` and ``EvaBlock.forward`` are both

    x = x + DropPath1(LS1(Attn(LN1(x))))          (Eva: Attn with the RoPE of the patches)
    x = x + DropPath2(LS2(MLP(LN2(x))))

and :func:`run_block_steps` runs those very steps, with the block's own modules (the family
says how to call them: ``trunk_families.py``), so that tuning parts can add a branch where the
methods put one (docs/methods.md, "Tuning parts"):

- ``after_attention``: f(x) added to x after the self-attention sum (CVPT's cross-attention);
- ``beside_mlp``: g(x) of the MLP's input stream added beside the MLP (AdaptFormer's adapter),
  x_out = x + DropPath2(LS2(MLP(LN2(x)))) + g(x).

With no branch it equals the block's own forward bit for bit (tests/test_tuning_parts.py and
tests/test_trunk_families.py check it against timm's forward for every family). It is the only
place in the package that re-runs a block.
"""
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .trunk_families import VIT, TrunkFamily

Branch = Callable[[torch.Tensor], torch.Tensor]


class BlockSteps(NamedTuple):
    """The block's intermediates (B, T, D), for parts that read them (metric guidance).

    ``block_in``: the input; ``attn_out``: Attn(LN1(x)); ``queried``: the stream after the
    self-attention sum, before any ``after_attention`` branch; ``out``: the block's output.
    """
    block_in: torch.Tensor
    attn_out: torch.Tensor
    queried: torch.Tensor
    out: torch.Tensor


def run_block_steps(block: nn.Module, x: torch.Tensor, after_attention: Sequence[Branch] = (),
                    beside_mlp: Sequence[Branch] = (), family: TrunkFamily = VIT,
                    rope: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, BlockSteps]:
    """x (B, T, D) through ``block`` (of ``family``, with ``rope`` for an Eva block) with the
    branches added; returns (output, intermediates)."""
    attn = family.attention(block, x, rope)
    queried = x + block.drop_path1(family.scale_attention(block, attn))
    y = queried
    for branch in after_attention:
        y = y + branch(y)
    out = y + block.drop_path2(family.scale_mlp(block, block.mlp(block.norm2(y))))
    for branch in beside_mlp:
        out = out + branch(y)
    return out, BlockSteps(x, attn, queried, out)


def check_steppable(block: nn.Module, index: int, model_name: str, family: TrunkFamily,
                    who: str, fix: str) -> None:
    """Raise unless :func:`run_block_steps` can run block ``index`` of ``model_name`` (it is its
    family's block class); ``who`` names the part that needs it and ``fix`` what the user can do
    instead."""
    if not family.steppable(block):
        raise ValueError(
            f'{who} runs the trunk\'s blocks step by step, which it does for timm\'s '
            f'{family.BLOCK.__name__} in {family.NAME} models, but block {index} of '
            f'{model_name} is a {type(block).__name__}: use a ViT, DeiT, DINOv2 or DINOv3 '
            f'model, or {fix}')
