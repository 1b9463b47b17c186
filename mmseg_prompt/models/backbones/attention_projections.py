"""Projections through a frozen timm attention's fused ``qkv`` Linear, one part at a time."""
import torch
import torch.nn as nn
import torch.nn.functional as F

_PARTS = dict(q=(0, 1), k=(1, 2), v=(2, 3), kv=(1, 3))


def qkv_project(attn: nn.Module, x: torch.Tensor, part: str) -> torch.Tensor:
    """x (..., D) through the ``part`` ('q', 'k', 'v' or 'kv') rows of ``attn.qkv``: the very
    weight and bias tensors, sliced (views, not copies). Returns (..., width) or (..., 2 width)."""
    width = attn.num_heads * attn.head_dim
    start, stop = (i * width for i in _PARTS[part])
    w, b = attn.qkv.weight, attn.qkv.bias
    return F.linear(x, w[start:stop], None if b is None else b[start:stop])
