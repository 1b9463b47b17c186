"""DA-VPT (CVPR 2025): VPT-Deep whose guided blocks carry prompts that act as class proxies.

FrozenViT with :class:`SequencePrompts` whose guided blocks (default: the last) carry M prompts,
one per cluster of classes, and ``bias_tuning=True`` for DA-VPT+ (docs/methods.md, "DA-VPT").
The metric loss lives in the segmentor (``MetricGuidedEncoderDecoder``), which has the labels and
reads the guided features through ``forward_guided``.
"""
from typing import Sequence, Union

from mmseg.registry import MODELS

from .frozen_vit import FrozenViT


@MODELS.register_module()
class DAVPTViT(FrozenViT):
    """Frozen timm ViT with VPT-Deep prompts, metric-guided prompts and optional K/V bias tuning.

    Args:
        num_prompts: VPT-Deep prompts of the unguided blocks (int or per-block list).
        prompt_dropout: dropout on the prompts, per sample.
        guided_blocks: blocks whose prompts are class proxies (negative counts from the end).
        num_guided_prompts: M, prompts (= clusters of classes) in each guided block.
        bias_tuning: DA-VPT+: train a (2, D) delta on the K and V bias of every block.
        **kwargs: :class:`FrozenViT` arguments.
    """

    def __init__(self,
                 num_prompts: Union[int, Sequence[int]] = 10,
                 prompt_dropout: float = 0.1,
                 guided_blocks: Sequence[int] = (-1,),
                 num_guided_prompts: int = 20,
                 bias_tuning: bool = False,
                 **kwargs):
        super().__init__(prompts=dict(type='SequencePrompts', num_prompts=num_prompts,
                                      dropout=prompt_dropout, guided_blocks=guided_blocks,
                                      num_guided_prompts=num_guided_prompts),
                         bias_tuning=bias_tuning, **kwargs)
        if self.trunk.cls_token is None:
            raise ValueError(f'DA-VPT compares prompts with the class token, but '
                             f'{self.model_name} has none')
