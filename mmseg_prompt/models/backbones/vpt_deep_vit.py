"""VPT-Deep (Jia et al., ECCV 2022), the baseline both CVPT and DA-VPT beat.

Before block l the sequence is [prefix tokens, P_l, patches]; after the block the outputs at the
prompt positions are dropped, and block l+1 gets its own P_{l+1}. Prompts never reach the outputs.
Self-attention then runs on N + M_l tokens: O((N + M)^2) per block.
"""
from typing import Sequence, Union

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

    def block_prompt_counts(self, num_prompts) -> list:
        """M_l for every block (subclasses may change some blocks' counts)."""
        return prompt_counts(num_prompts, self.depth)

    def forward_block(self, index: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        prompts = self.prompts.for_batch(index, B)
        if prompts is None:
            return block(x)
        if prompts.dim() == 2:
            prompts = prompts.unsqueeze(0).expand(B, -1, -1)
        n, m = self.num_prefix_tokens, prompts.shape[1]
        x = block(torch.cat([x[:, :n], prompts.to(x.dtype), x[:, n:]], dim=1))
        return torch.cat([x[:, :n], x[:, n + m:]], dim=1)
