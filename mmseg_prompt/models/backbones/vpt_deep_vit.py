"""VPT-Deep (Jia et al., ECCV 2022), the baseline both CVPT and DA-VPT beat: FrozenViT with
:class:`SequencePrompts` in every block (docs/methods.md, "VPT-Deep")."""
from typing import Sequence, Union

from mmseg.registry import MODELS

from .frozen_vit import FrozenViT


@MODELS.register_module()
class VPTDeepViT(FrozenViT):
    """Frozen timm ViT with VPT-Deep prompts, replaced in every block.

    Args:
        num_prompts: prompts per block, an int or one count per block (0 = that block runs
            unchanged).
        prompt_dropout: dropout on the prompts, per sample after expanding to the batch.
        bias_tuning: also train K/V bias deltas (DA-VPT+'s, without its guidance).
        **kwargs: :class:`FrozenViT` arguments.

    Same as ``FrozenViT(prompts=dict(type='SequencePrompts', num_prompts=..., dropout=...))``
    under this name, which its checkpoints record.
    """

    def __init__(self,
                 num_prompts: Union[int, Sequence[int]] = 10,
                 prompt_dropout: float = 0.1,
                 **kwargs):
        super().__init__(prompts=dict(type='SequencePrompts', num_prompts=num_prompts,
                                      dropout=prompt_dropout), **kwargs)
