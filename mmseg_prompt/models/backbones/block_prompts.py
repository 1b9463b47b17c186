"""Per-block learnable prompt tokens, shared by every prompt method.

Block l owns M_l prompt tokens P_l (M_l, D); M_l may differ per block and may be 0 (no prompts in
that block), which gives layer-adaptive prompt counts.
"""
import math
from typing import List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn

from ..utils.random_bits_dropout import RandomBitsDropout
from .tuning_part import GuidedPromptsContract


def prompt_counts(num_prompts: Union[int, Sequence[int]], depth: int) -> List[int]:
    """Expand ``num_prompts`` (an int for every block, or one count per block) to ``depth``
    counts."""
    if isinstance(num_prompts, bool):
        raise TypeError('num_prompts must be an int or a list of ints, not a bool')
    if isinstance(num_prompts, int):
        counts = [num_prompts] * depth
    elif isinstance(num_prompts, Sequence) and all(
            isinstance(m, int) and not isinstance(m, bool) for m in num_prompts):
        counts = list(num_prompts)
        if len(counts) != depth:
            raise ValueError(
                f'num_prompts has {len(counts)} per-block counts but the trunk has {depth} blocks; '
                f'give one count per block (0 = no prompts in that block) or a single int')
    else:
        raise TypeError(f'num_prompts must be an int or a list of {depth} ints, '
                        f'got {num_prompts!r}')
    if any(m < 0 for m in counts):
        raise ValueError(f'num_prompts must be >= 0 in every block, got {counts}')
    return counts


def xavier_bound_3d(dim: int, num_prompts: int, depth: int) -> float:
    """CVPT's init: xavier-uniform over the (depth, M, D) tensor, bound
    sqrt(6 / (D (M + depth)))."""
    return math.sqrt(6.0 / (dim * (num_prompts + depth)))


def vpt_patch_bound(dim: int, patch_size: Sequence[int], in_chans: int = 3) -> float:
    """VPT's init (its public code): uniform with bound sqrt(6 / (C ph pw + D)), the xavier bound
    of a patch-embedding-shaped matrix."""
    ph, pw = patch_size
    return math.sqrt(6.0 / (in_chans * ph * pw + dim))


class BlockPrompts(GuidedPromptsContract):
    """The prompt tokens of every block: the base of the prompt parts (``NAME = 'prompts'``).

    Args:
        counts: M_l for each block (0 = none).
        dim: token width D.
        bounds: per-block uniform init bound (tokens ~ U(-bound, bound)).
        dropout: prompt dropout, applied per sample after expanding to the batch (training only;
            :class:`RandomBitsDropout`, ``nn.Dropout`` with a cheaper CPU mask).

    Parameters are ``tokens.<block index>`` of shape (M_l, D), only for blocks with M_l > 0;
    they take no weight decay (``PromptOptimWrapperConstructor``'s ``prompt_decay_mult``).
    """

    NAME = 'prompts'

    def __init__(self, counts: Sequence[int], dim: int, bounds: Sequence[float],
                 dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'prompt_dropout must be in [0, 1), got {dropout}')
        self.counts = list(counts)
        self.dim = dim
        self.tokens = nn.ParameterDict()
        for i, (m, bound) in enumerate(zip(self.counts, bounds)):
            if m > 0:
                self.tokens[str(i)] = nn.Parameter(torch.empty(m, dim).uniform_(-bound, bound))
        # The key of each block's tokens, None where it has none: built once, so the forward
        # never calls str(index), which torch.compile cannot trace for a symbolic index.
        self.block_keys: List[Optional[str]] = [str(i) if m > 0 else None
                                                for i, m in enumerate(self.counts)]
        self.dropout = RandomBitsDropout(dropout)

    def no_decay_parameters(self) -> Set[str]:
        return {f'tokens.{k}' for k in self.tokens}

    def weights_layout(self) -> dict:
        return dict(num_prompts=list(self.counts), guided_blocks=list(self.guided_blocks))

    def get(self, index: int) -> Optional[torch.Tensor]:
        """The raw prompts (M_l, D) of block ``index``, or None if it has none."""
        key = self.block_keys[index]
        return None if key is None else self.tokens[key]

    @property
    def per_sample(self) -> bool:
        """True when prompts differ per sample (dropout active), so they must be batched."""
        return self.training and self.dropout.p > 0

    def for_batch(self, index: int, batch: int) -> Optional[torch.Tensor]:
        """Prompts of block ``index`` for a batch of ``batch`` samples.

        Returns (M_l, D), shared by every sample, when no dropout is active, so that work done on
        the prompts alone (e.g. CVPT's key/value projection) happens once per forward; otherwise
        (B, M_l, D) with independent dropout per sample. None if the block has no prompts.
        """
        p = self.get(index) if self.enabled else None
        if p is None or not self.per_sample:
            return p
        return self.dropout(p.unsqueeze(0).expand(batch, -1, -1))

    def extra_repr(self) -> str:
        return f'counts={self.counts}, dim={self.dim}'


def normalise_indices(indices: Union[int, Sequence[int]], depth: int,
                      key: str = 'out_indices') -> Tuple[int, ...]:
    """Block indices (negative: from the end) as a tuple of 0..depth-1, each at most once;
    ``key`` names the config key in the error."""
    if isinstance(indices, int):
        indices = [indices]
    out: List[int] = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f'{key} has {i}, but the trunk has {depth} blocks '
                             f'(valid: 0..{depth - 1} or negative from the end)')
        if j in out:
            raise ValueError(f'{key} has block {j} twice ({tuple(indices)}); each block '
                             f'appears once')
        out.append(j)
    return tuple(out)
