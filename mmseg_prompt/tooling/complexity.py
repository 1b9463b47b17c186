"""FLOP counting of segmentors with mmengine's FlopAnalyzer, shared by the analysis tools."""
from typing import Any, List, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FlopAnalyzer handle for ``aten::scaled_dot_product_attention``, which it does not count by
    itself: Q K^T and A V, 2 B H N M d multiply-adds."""
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    *batch, n, d = q
    count = n * k[-2] * d * 2
    for b in batch:
        count *= b
    return count


class SegmentorForward(nn.Module):
    """A segmentor's tensor forward (backbone, neck, decode head; mmseg's ``mode='tensor'``) as a
    module of one input, for tracing and timing. Its submodule is named ``segmentor``."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentor(x, mode='tensor')


def flop_analyzer(model: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> FlopAnalyzer:
    """mmengine's FlopAnalyzer of ``model(*inputs)``, counting SDPA too, without its warnings.
    Counts are multiply-adds counted once (fvcore's and mmengine's convention)."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analyzer
