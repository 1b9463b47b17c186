"""Prompts inserted in the token sequence (VPT-Deep), optionally metric-guided (DA-VPT).

Before block l the sequence is [prefix tokens, P_l, patches]; after the block the outputs at the
prompt positions are dropped, and block l+1 gets its own P_{l+1} in their place
(docs/methods.md, "VPT-Deep").
Self-attention then runs on N + M_l tokens: O((N + M)^2) per block.

Guided blocks (DA-VPT) carry M guided prompts, one per cluster of classes, and record what the
metric loss compares (docs/methods.md, "DA-VPT"): the block's attention output at the patches
(the paper) or the block's input there (the code), the prompts, and the output class token.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmseg.registry import MODELS

from .attention_projections import qkv_project
from .block_indices import normalise_indices
from .block_prompts import BlockPrompts, prompt_counts, vpt_patch_bound
from .block_steps import BlockSteps
from .tuning_part import Record


@MODELS.register_module()
class SequencePrompts(BlockPrompts):
    """VPT-Deep's per-block prompt tokens, a part of :class:`FrozenViT` (``prompts=dict(...)``).

    Args:
        embed_dim, depth, patch_size, in_chans: the trunk's (the backbone passes them).
        num_prompts: M_l per block, an int or one count per block (0: the block runs as is).
        dropout: prompt dropout, per sample after expanding to the batch.
        guided_blocks: blocks whose prompts are class proxies (negative counts from the end).
        num_guided_prompts: M of each guided block (its count in ``num_prompts`` is replaced).

    Init as VPT's code: uniform with bound sqrt(6 / (3 p^2 + D)), p the patch size.
    """

    METHOD = 'VPT-Deep'  # what guided prompts train as without the metric loss
    TRUNK_ARGS = ('embed_dim', 'depth', 'patch_size', 'in_chans')
    CHANGES_SEQUENCE = True
    TOKEN_SIDES = ('attn_out', 'block_in')
    PROMPT_SIDES = ('query', 'raw')

    def __init__(self,
                 embed_dim: int,
                 depth: int,
                 patch_size: Sequence[int],
                 in_chans: int = 3,
                 num_prompts: Union[int, Sequence[int]] = 10,
                 dropout: float = 0.1,
                 guided_blocks: Sequence[int] = (),
                 num_guided_prompts: Optional[int] = None):
        counts = prompt_counts(num_prompts, depth)
        guided = normalise_indices(guided_blocks, depth, 'guided_blocks')
        if guided:
            if num_guided_prompts is None or num_guided_prompts < 1:
                raise ValueError(f'guided blocks need num_guided_prompts >= 1, got '
                                 f'{num_guided_prompts}')
            for i in guided:
                counts[i] = num_guided_prompts
        bound = vpt_patch_bound(embed_dim, patch_size, in_chans)
        super().__init__(counts, embed_dim, [bound] * depth, dropout)
        self.guided_blocks: Tuple[int, ...] = guided

    def insert(self, index: int, x: torch.Tensor, num_prefix: int,
               present: int = 0) -> Tuple[torch.Tensor, int]:
        """[prefix, Q, patches] (B, n + present + N, D), Q the ``present`` tokens the previous
        block ran with, -> [prefix, P_index, patches], and M_index (0: none).

        One operation per block: the previous block's prompt outputs are overwritten in place of
        a copy (``slice_scatter``) when the counts are equal, else cut out as P_index goes in."""
        prompts = self.for_batch(index, x.shape[0])
        m = 0 if prompts is None else prompts.shape[-2]
        if m == 0 and present == 0:
            return x, 0
        n = num_prefix
        if prompts is not None:
            prompts = prompts.to(x.dtype)
            if prompts.dim() == 2:
                prompts = prompts.unsqueeze(0).expand(x.shape[0], -1, -1)
        if m == present:
            return x.slice_scatter(prompts, dim=1, start=n, end=n + m), m
        pieces = [x[:, :n]] + ([prompts] if m else []) + [x[:, n + present:]]
        return torch.cat(pieces, dim=1), m

    def guidance(self, index: int, steps: BlockSteps, start: int) -> Dict[str, torch.Tensor]:
        """A guided block's record: its attention output and input at the patches, its raw
        prompts and its output class token."""
        return dict(attn_out=steps.attn_out[:, start:], block_in=steps.block_in[:, start:],
                    prompts=self.get(index), cls=steps.out[:, 0])

    def metric_features(self, record: Record, blocks: nn.ModuleList, index: int,
                        token_side: str, prompt_side: str
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, N, D) at the patches ('attn_out' or 'block_in'), prompts (M, D) ('query':
        P W_q + b_q through the block's frozen projection, the paper; 'raw': the code) and the
        output class token (B, D) of guided block ``index``."""
        g = record[index]
        prompts = qkv_project(blocks[index].attn, g['prompts'], 'q') \
            if prompt_side == 'query' else g['prompts']
        return g[token_side], prompts, g['cls']
