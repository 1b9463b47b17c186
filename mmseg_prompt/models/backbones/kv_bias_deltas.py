"""Key/value bias deltas (DA-VPT+): a trained shift of every block's K and V bias.

For block l with the frozen fused projection qkv(x) = x W^T + b, b = [b_q, b_k, b_v]:

    qkv'(x) = x W^T + b + [0, dk_l, dv_l]                     (docs/methods.md, "DA-VPT+")

The pretrained bias tensor itself never changes. The delta is added to the output of the block's
``attn.qkv`` Linear by a forward hook (PyTorch's extension point for a module's output), so the
timm block runs unchanged, and so does every method around it: VPT-Deep's sequence prompts,
CVPT's cross-attention (whose prompt keys and values use the frozen projection: a shift of them
would be absorbed by the trained prompts themselves) and the metric guidance.
"""
from functools import partial
from typing import List

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle


def check_qkv_biases(blocks: nn.ModuleList, model_name: str) -> None:
    """Every block needs a fused ``attn.qkv`` Linear with a bias to shift."""
    for i, block in enumerate(blocks):
        qkv = getattr(getattr(block, 'attn', None), 'qkv', None)
        if not isinstance(qkv, nn.Linear) or qkv.bias is None:
            raise ValueError(f'bias_tuning=True, but block {i} of {model_name} has no fused '
                             f'qkv Linear with a bias (model.backbone.bias_tuning)')


def attach_kv_bias_deltas(blocks: nn.ModuleList, deltas: nn.Parameter) -> List[RemovableHandle]:
    """Hook ``deltas`` (depth, 2, D) onto the blocks' ``attn.qkv``; returns the hook handles."""
    return [block.attn.qkv.register_forward_hook(partial(_add_kv_delta, deltas=deltas, index=i))
            for i, block in enumerate(blocks)]


def _add_kv_delta(module: nn.Linear, inputs, output: torch.Tensor, *, deltas: nn.Parameter,
                  index: int) -> torch.Tensor:
    """Forward hook: qkv output (..., 3D) + [0, dk, dv]."""
    delta = deltas[index].flatten().to(output.dtype)                   # (2D,) = [dk, dv]
    return output + torch.cat([delta.new_zeros(output.shape[-1] - delta.numel()), delta])
