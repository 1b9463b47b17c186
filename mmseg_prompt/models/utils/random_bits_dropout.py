"""Dropout whose CPU mask is drawn from 16 random bits per element.

On CPU, ``nn.Dropout`` spends most of its time in ``bernoulli_``, one generator call per element.
Here one 64-bit draw from torch's generator gives four 16-bit integers r, uniform on [0, 65536),
and an element is kept when r >= t, t = round(p * 65536):

    keep ~ Bernoulli(1 - t / 65536),  out = x * keep / (1 - t / 65536)

so E[out] = x exactly, and the drop rate is p quantised to a multiple of 1/65536 (within 7.6e-6
of p). It is faster than ``nn.Dropout`` on CPU (docs/cost.md has the timing). The masks come
from torch's default generator, so ``torch.manual_seed``, saved RNG states and activation
checkpointing's RNG replay all apply.
On other devices it is ``F.dropout``, whose kernels are already fast there.

Inside ``torch.compile`` (``torch.compiler.is_compiling()``) it is ``F.dropout`` on every device:
``Tensor.random_`` would break the graph, and inductor generates its own fused random masks. The
keep rate is the same Bernoulli(1 - p) (up to the 7.6e-6 quantisation above), the random stream
another: a compiled and an eager run draw different masks from the same seed.
"""
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_LEVELS = 1 << 16


def random_int16(numel: int) -> torch.Tensor:
    """``numel`` CPU int16 values uniform on [-32768, 32768), four from each of
    ceil(numel / 4) 64-bit draws of torch's default generator."""
    words = torch.empty((numel + 3) // 4, dtype=torch.int64)
    words.random_(-2**63, None)  # every bit uniform: the int64 range in full
    return words.view(torch.int16)[:numel]


def keep_threshold(p: float) -> int:
    """The int16 value at and above which an element is kept: keep rate
    1 - round(p * 65536) / 65536."""
    return round(p * _LEVELS) - _LEVELS // 2


def keep_scale(p: float) -> float:
    """1 / the keep rate of :func:`keep_threshold`, so that E[out] = x exactly."""
    return _LEVELS / (_LEVELS - round(p * _LEVELS))


def random_bits_keep_mask(shape: Sequence[int], p: float) -> torch.Tensor:
    """CPU bool mask of ``shape``, each element True with probability
    1 - round(p * 65536) / 65536."""
    return random_int16(math.prod(shape)).view(shape) >= keep_threshold(p)


class RandomBitsDropout(nn.Module):
    """Drop-in ``nn.Dropout`` (elementwise, scaled in training, identity in eval) with a cheaper
    CPU mask; see the module docstring for the exact keep probability."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f'dropout probability must be in [0, 1), got {p}')
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != 'cpu' or torch.compiler.is_compiling():
            return F.dropout(x, self.p, training=True)
        if round(self.p * _LEVELS) == 0:
            return x
        keep = random_bits_keep_mask(x.shape, self.p)
        # autograd keeps only the bool mask; the gradient is masked and scaled the same way
        return torch.where(keep, x * keep_scale(self.p), 0.0)

    def extra_repr(self) -> str:
        return f'p={self.p}'
