"""CVPT (ICCV 2025): prompts that image tokens read through cross-attention, after self-attention.

FrozenViT with :class:`CrossAttentionPrompts` in every block (docs/methods.md, "CVPT"); with
``bias_tuning=True`` also DA-VPT+'s K/V bias deltas (CVPT+, ``configs/cvpt_plus_vitl_ade20k.py``).
"""
from typing import Sequence, Union

from mmseg.registry import MODELS

from .cross_attention_prompts import PromptCrossAttention
from .frozen_vit import FrozenViT

__all__ = ['CVPTViT', 'PromptCrossAttention']


@MODELS.register_module()
class CVPTViT(FrozenViT):
    """Frozen timm ViT with CVPT cross-attention prompts in every block.

    Args:
        num_prompts: prompts per block, an int or one count per block (0 = that block runs
            unchanged). The released CVPT segmentation config uses 10; the paper's best ADE20K
            result 200.
        prompt_dropout: dropout on the prompts, per sample (CVPT segmentation: 0.1).
        cross_proj_drop: dropout on the cross-attention output projection (CVPT segmentation: 0.1).
        cross_attn_fold: 'auto' (the folded form when heads x prompts < width), 'always' or
            'never'; both forms are exact (see :class:`PromptCrossAttention`).
        guided_blocks: blocks whose prompts ``MetricGuidedEncoderDecoder`` may guide (metric
            guidance on CVPT, which neither paper does); none by default.
        bias_tuning: also train K/V bias deltas on every block's self-attention (CVPT+).
        **kwargs: :class:`FrozenViT` arguments (``model_name``, ``pretrained``, ``img_size``,
            ``out_indices``, ...).
    """

    def __init__(self,
                 num_prompts: Union[int, Sequence[int]] = 10,
                 prompt_dropout: float = 0.1,
                 cross_proj_drop: float = 0.1,
                 cross_attn_fold: str = 'auto',
                 guided_blocks: Sequence[int] = (),
                 **kwargs):
        super().__init__(prompts=dict(type='CrossAttentionPrompts', num_prompts=num_prompts,
                                      dropout=prompt_dropout, proj_drop=cross_proj_drop,
                                      fold=cross_attn_fold, guided_blocks=guided_blocks),
                         **kwargs)
