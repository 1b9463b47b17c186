"""The dropout masks of several tensors drawn in one call: one random draw per forward instead of
one per block (docs/cost.md, "Kernel launches").

Each mask m has the shape of the tensor it drops and holds 0 or the keep scale s, so that
dropout is one product, ``x * m``, in the forward and in the backward:

    m = keep / q,  keep ~ Bernoulli(q),  q = 1 - p

On CPU outside ``torch.compile`` the bits are :func:`random_bits_keep_mask`'s, word for word:
mask i takes the ``ceil(numel_i / 4)`` 64-bit words that its own draw would take, in order, so
the masks equal those of one :class:`RandomBitsDropout` call per tensor made in the same order
(q quantised to a multiple of 1/65536 as there). Elsewhere, and when compiling, the draw is
``torch.rand``: keep = (u >= p), q = 1 - p, the distribution of ``F.dropout``.
"""
import math
from typing import List, Sequence, Tuple

import torch

from .random_bits_dropout import keep_scale, keep_threshold, random_int16

Shape = Tuple[int, ...]


def dropout_masks(shapes: Sequence[Shape], rates: Sequence[float],
                  device: torch.device) -> List[torch.Tensor]:
    """One float32 mask per shape (views of one draw), mask i for dropout rate ``rates[i]``
    (each in (0, 1)). Costs one random draw plus a compare and a product per distinct rate."""
    if len(shapes) != len(rates):
        raise ValueError(f'{len(shapes)} shapes but {len(rates)} dropout rates')
    if not shapes:
        return []
    numels = [math.prod(s) for s in shapes]
    bits_path = torch.device(device).type == 'cpu' and not torch.compiler.is_compiling()
    if bits_path:  # each mask starts at a 64-bit word, as its own draw would
        lengths = [4 * ((n + 3) // 4) for n in numels]
        values = random_int16(sum(lengths))
    else:
        lengths = numels
        values = torch.rand(sum(numels), device=device)
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    scaled = {}
    for p in sorted(set(rates)):
        if bits_path:
            scaled[p] = (values >= keep_threshold(p)) * keep_scale(p)
        else:
            scaled[p] = (values >= p) * (1.0 / (1.0 - p))
    return [scaled[p][s:s + n].view(shape)
            for shape, p, s, n in zip(shapes, rates, starts, numels)]
