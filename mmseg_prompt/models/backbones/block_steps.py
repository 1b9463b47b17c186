"""A timm ViT ``Block`` run step by step, with branches added at its two residual sums.

timm's ``Block.forward`` is

    x = x + DropPath1(LS1(Attn(LN1(x))))
    x = x + DropPath2(LS2(MLP(LN2(x))))

and :func:`run_block_steps` runs those very steps, with the block's own modules, so that tuning
parts can add a branch where the methods put one (docs/methods.md, "Tuning parts"):

- ``after_attention``: f(x) added to x after the self-attention sum (CVPT's cross-attention);
- ``beside_mlp``: g(x) of the MLP's input stream added beside the MLP (AdaptFormer's adapter),
  x_out = x + DropPath2(LS2(MLP(LN2(x)))) + g(x).

With no branch it equals ``block(x)`` (tests/test_block_steps.py checks it against timm's forward
for every trunk family we support). It is the only place in the package that re-runs a block.
"""
from typing import Callable, NamedTuple, Sequence, Tuple

import torch
import torch.nn as nn

Branch = Callable[[torch.Tensor], torch.Tensor]

# The block members run_block_steps uses: timm's Block (ViT, DeiT) has all of them.
BLOCK_MEMBERS = ('norm1', 'attn', 'ls1', 'drop_path1', 'norm2', 'mlp', 'ls2', 'drop_path2')


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
                    beside_mlp: Sequence[Branch] = ()) -> Tuple[torch.Tensor, BlockSteps]:
    """x (B, T, D) through ``block`` with the branches added; returns (output, intermediates)."""
    attn = block.attn(block.norm1(x))
    queried = x + block.drop_path1(block.ls1(attn))
    y = queried
    for branch in after_attention:
        y = y + branch(y)
    out = y + block.drop_path2(block.ls2(block.mlp(block.norm2(y))))
    for branch in beside_mlp:
        out = out + branch(y)
    return out, BlockSteps(x, attn, queried, out)


def check_steppable(block: nn.Module, index: int, model_name: str, who: str, fix: str) -> None:
    """Raise unless block ``index`` of ``model_name`` has the members :func:`run_block_steps`
    runs; ``who`` names the part that needs it and ``fix`` what the user can do instead."""
    missing = [n for n in BLOCK_MEMBERS if not hasattr(block, n)]
    if missing:
        members = ', '.join(BLOCK_MEMBERS)
        raise ValueError(
            f'{who} runs the trunk\'s blocks step by step (timm\'s Block: {members}), but '
            f'block {index} of {model_name} ({type(block).__name__}) has no '
            f'{", ".join(missing)}: use a VisionTransformer model (ViT, DeiT) or {fix}')
