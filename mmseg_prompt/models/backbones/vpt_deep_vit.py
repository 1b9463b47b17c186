"""VPT-Deep (Jia et al., ECCV 2022), the baseline both CVPT and DA-VPT beat.

Before block l the sequence is [prefix tokens, P_l, patches]; after the block the outputs at the
prompt positions are dropped, and block l+1 gets its own P_{l+1}. Prompts never reach the outputs.
Self-attention then runs on N + M_l tokens: O((N + M)^2) per block.
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmseg.registry import MODELS

from .block_prompts import BlockPrompts, prompt_counts, vpt_patch_bound
from .frozen_vit import FrozenViT


@MODELS.register_module()
class VPTDeepViT(FrozenViT):
    """Frozen timm ViT with VPT-Deep prompts, replaced in every block.

    Args:
        num_prompts: prompts per block, an int or one count per block (0 = that block runs
            unchanged).
        prompt_dropout: dropout on the prompts, per sample after expanding to the batch.
        **kwargs: :class:`FrozenViT` arguments.

    Prompts are initialised as in VPT's code: uniform with bound sqrt(6 / (3 p^2 + D)), p the
    patch size. They are the only trainable parameters.
    """

    def __init__(self,
                 num_prompts: Union[int, Sequence[int]] = 10,
                 prompt_dropout: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        counts = self.block_prompt_counts(num_prompts)
        patch_embed = self.trunk.patch_embed
        bound = vpt_patch_bound(self.embed_dim, patch_embed.patch_size,
                                patch_embed.proj.in_channels)
        self.prompts = BlockPrompts(counts, self.embed_dim, [bound] * self.depth, prompt_dropout)

    def weights_layout(self) -> dict:
        """:meth:`FrozenViT.weights_layout` plus the prompts per block."""
        return dict(super().weights_layout(), num_prompts=list(self.prompts.counts))

    def block_prompt_counts(self, num_prompts) -> list:
        """M_l for every block (subclasses may change some blocks' counts)."""
        return prompt_counts(num_prompts, self.depth)

    def insert_prompts(self, index: int, x: torch.Tensor) -> Tuple[torch.Tensor, int]:
        """[prefix, patches] (B, n + N, D) -> [prefix, P_index, patches], and M_index (0: as is)."""
        prompts = self.prompts.for_batch(index, x.shape[0])
        if prompts is None:
            return x, 0
        if prompts.dim() == 2:
            prompts = prompts.unsqueeze(0).expand(x.shape[0], -1, -1)
        n = self.num_prefix_tokens
        return torch.cat([x[:, :n], prompts.to(x.dtype), x[:, n:]], dim=1), prompts.shape[1]

    def remove_prompts(self, x: torch.Tensor, m: int) -> torch.Tensor:
        """Drop the m prompt positions after the prefix tokens."""
        n = self.num_prefix_tokens
        return x if m == 0 else torch.cat([x[:, :n], x[:, n + m:]], dim=1)

    def forward_block(self, index: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x, m = self.insert_prompts(index, x)
        return self.remove_prompts(block(x), m)
