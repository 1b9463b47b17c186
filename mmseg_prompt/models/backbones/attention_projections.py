"""Projections through a frozen timm attention's fused ``qkv`` Linear, one part at a time.

A ViT attention keeps its q/k/v bias in the Linear (``attn.qkv.bias``); an Eva attention (DINOv3)
keeps the query and value biases apart (``q_bias``, ``v_bias``, with a zero ``k_bias``) or has
none: :func:`qkv_bias` gives the fused (3 W,) bias either way.
"""
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.eva import EvaAttention

_PARTS = dict(q=(0, 1), k=(1, 2), v=(2, 3), kv=(1, 3))


class AttentionTensors(NamedTuple):
    """A timm attention's frozen ``qkv`` and ``proj`` weights and biases (biases may be None)."""
    qkv_weight: torch.Tensor
    qkv_bias: Optional[torch.Tensor]
    proj_weight: torch.Tensor
    proj_bias: Optional[torch.Tensor]


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes matmuls in on ``device_type``, or None when it is off."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def qkv_bias(attn: nn.Module) -> Optional[torch.Tensor]:
    """The fused q/k/v bias (3 W,) the attention adds to ``attn.qkv``'s output, or None."""
    if isinstance(attn, EvaAttention) and attn.q_bias is not None:
        return torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))  # as EvaAttention.forward
    return attn.qkv.bias


def hooked_qkv(attn: nn.Module) -> nn.Linear:
    """``attn.qkv``, set so that its forward hooks run on every forward (LoRA, K/V deltas).

    An Eva attention with separate q/v biases multiplies by ``attn.qkv.weight`` itself
    (``F.linear``), which bypasses the Linear's hooks; timm's own option
    ``qkv_bias_separate=True`` makes it call the Linear and add the bias after it.
    """
    if isinstance(attn, EvaAttention) and attn.q_bias is not None:
        attn.qkv_bias_separate = True
    return attn.qkv


def attention_tensors(attn: nn.Module, device_type: str) -> AttentionTensors:
    """The attention's tensors as stored or, under autocast to another dtype on ``device_type``,
    cast to it once (a block's several uses of one weight then share the cast)."""
    tensors = AttentionTensors(attn.qkv.weight, qkv_bias(attn), attn.proj.weight, attn.proj.bias)
    dtype = autocast_dtype(device_type)
    if dtype is None:
        return tensors
    return AttentionTensors(*(t if t is None or t.dtype == dtype else t.to(dtype)
                              for t in tensors))


def qkv_project(attn: nn.Module, x: torch.Tensor, part: str,
                tensors: Optional[AttentionTensors] = None) -> torch.Tensor:
    """x (..., D) through the ``part`` ('q', 'k', 'v' or 'kv') rows of ``attn.qkv`` (or of
    ``tensors.qkv_weight``, the same cast once): the very weight and bias tensors, sliced (views,
    not copies). Returns (..., width) or (..., 2 width)."""
    width = attn.num_heads * attn.head_dim
    start, stop = (i * width for i in _PARTS[part])
    w, b = (attn.qkv.weight, qkv_bias(attn)) if tensors is None else tensors[:2]
    return F.linear(x, w[start:stop], None if b is None else b[start:stop])
