"""FLOPs of one inference forward and of one training step, as multiply-adds counted once
(fvcore's and mmengine's convention), for the cost benchmark (docs/cost.md, "The benchmark").

- inference: mmengine's ``FlopAnalyzer`` (``complexity.flop_analyzer``, given a handle for
  ``scaled_dot_product_attention``, which it does not count by itself);
- training step: torch's ``FlopCounterMode`` over forward and backward as they run (dropout
  included), given formulas for the CPU flash-attention kernels, which it does not count by
  itself: forward Q K^T and A V (2 B H N M d), backward 5 B H N M d (Q K^T recomputed, then
  dV, dA, dQ, dK).
"""
from typing import Callable, Dict, Iterable, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import (FlopCounterMode, sdpa_backward_flop_count,
                                      sdpa_flop_count)

from .complexity import flop_analyzer


def inference_flops(model: nn.Module, inputs: Tuple[torch.Tensor, ...]
                    ) -> Tuple[int, Dict[str, int]]:
    """Multiply-adds of ``model(*inputs)`` traced by mmengine's FlopAnalyzer, and the operators
    it left out (name -> calls)."""
    analyzer = flop_analyzer(model, inputs)
    return analyzer.total(), dict(analyzer.unsupported_ops())


def _sdpa_forward(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


def cpu_attention_formulas() -> dict:
    """``FlopCounterMode`` formulas (in its unit: a multiply-add counts 2) for the CPU
    flash-attention kernels of ``scaled_dot_product_attention``, forward and backward."""
    aten = torch.ops.aten
    return {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward}


def train_flops(forward_loss: Callable[[], torch.Tensor],
                grads: Iterable[torch.Tensor]) -> float:
    """Multiply-adds of ``forward_loss()`` and its backward, counted by torch's
    ``FlopCounterMode``; the gradients this leaves in ``grads`` are unset again."""
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas())
    with counter:
        forward_loss().backward()
    for t in grads:
        t.grad = None
    return counter.get_total_flops() / 2  # torch counts a multiply-add as 2
