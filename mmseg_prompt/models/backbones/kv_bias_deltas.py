"""Key/value bias deltas (DA-VPT+): a trained shift of every block's K and V bias.

For block l with the frozen fused projection qkv(x) = x W^T + b, b = [b_q, b_k, b_v] (b = 0 where
the trunk has no such bias, as DINOv3's key):

    qkv'(x) = x W^T + b + [0, dk_l, dv_l]                     (docs/methods.md, "DA-VPT+")

The pretrained bias tensors themselves never change. The delta is added to the output of the
block's ``attn.qkv`` Linear by a forward hook (PyTorch's extension point for a module's output),
so the timm block runs unchanged, and so does every part beside it: VPT-Deep's sequence prompts,
CVPT's cross-attention (whose prompt keys and values use the frozen projection: a shift of them
would be absorbed by the trained prompts themselves) and the metric guidance.

What dk does depends on the trunk's positions: under a position table (ViT) every query meets
the same q . dk for every key, which softmax cancels, so dk changes nothing and gets no gradient;
under RoPE (DINOv3) a patch key is rotated after the shift, R_j (k_j + dk), so q_i . R_j dk varies
with the key's position and dk acts as a learned relative-position bias.
"""
from typing import Dict

import torch
import torch.nn as nn
from mmseg.registry import MODELS

from .attention_projections import hooked_qkv
from .tuning_part import TuningPart


@MODELS.register_module()
class KVBiasDeltas(TuningPart):
    """A (depth, 2, D) delta ``kv_bias.delta`` on every block's key and value bias, zero at init
    (the start equals the trunk). ``FrozenViT(bias_tuning=True)`` adds this part.

    Args:
        embed_dim, depth: the trunk's (the backbone passes them).
    """

    NAME = 'kv_bias'
    METHOD = 'K/V bias tuning'
    MERGES_INTO_TRUNK = True

    def __init__(self, embed_dim: int, depth: int):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(depth, 2, embed_dim))

    def attach(self, trunk: nn.Module, model_name: str) -> None:
        """Every block needs a fused ``attn.qkv`` Linear to shift the output of; hook it."""
        for i, block in enumerate(trunk.blocks):
            qkv = getattr(getattr(block, 'attn', None), 'qkv', None)
            if not isinstance(qkv, nn.Linear):
                raise ValueError(f'bias_tuning=True, but block {i} of {model_name} has no fused '
                                 f'qkv Linear (model.backbone.bias_tuning)')
            self.register_output_hook(hooked_qkv(block.attn), _add_kv_delta, index=i)

    def merge_into(self, trunk: nn.Module) -> None:
        """Add the deltas to the trunk's qkv biases (for an exported checkpoint that no longer
        needs this part): b_k += dk, b_v += dv. Only a trunk whose Linear holds the biases (ViT)
        has a key bias tensor to take dk."""
        for i, block in enumerate(trunk.blocks):
            if block.attn.qkv.bias is None:
                raise ValueError(
                    f'the K/V bias deltas cannot be merged into this trunk: block {i}\'s '
                    f'attn.qkv has no bias tensor (an Eva/DINOv3 trunk keeps no key bias) to '
                    f'hold dk and dv; export without --merge (the part stays in the checkpoint)')
        with torch.no_grad():
            for i, block in enumerate(trunk.blocks):
                bias = block.attn.qkv.bias
                bias[bias.numel() - 2 * self.delta.shape[-1]:] += self.delta[i].flatten()

    def weights_layout(self) -> Dict[str, bool]:
        return {}  # one delta per block: the shapes say it all


def _add_kv_delta(module: nn.Linear, inputs, output: torch.Tensor, *, part: KVBiasDeltas,
                  index: int) -> torch.Tensor:
    """Forward hook: qkv output (..., 3D) + [0, dk, dv]."""
    delta = part.delta[index].flatten().to(output.dtype)                      # (2D,) = [dk, dv]
    return output + torch.cat([delta.new_zeros(output.shape[-1] - delta.numel()), delta])
