"""Per-block learnable prompt tokens, shared by every prompt method.

Block l owns M_l prompt tokens P_l (M_l, D); M_l may differ per block and may be 0 (no prompts in
that block), which gives layer-adaptive prompt counts.
"""
import math
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn

from ..utils.dropout_masks import dropout_masks
from .tuning_part import GuidedPromptsContract

# The name of a block's prompt-dropout mask among its masks (BlockPrompts.block_masks).
PROMPT_MASK = 'prompts'


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
        dropout: prompt dropout, applied per sample after expanding to the batch (training only).

    Parameters are ``tokens.<block index>`` of shape (M_l, D), only for blocks with M_l > 0;
    they take no weight decay (``PromptOptimWrapperConstructor``'s ``prompt_decay_mult``).

    With dropout active, :meth:`begin_forward` makes every block's per-sample prompts at once:
    one mask draw (``dropout_masks``), one concatenation and one product for all blocks, so a
    block only takes a view (docs/cost.md, "Kernel launches").
    """

    NAME = 'prompts'
    # Per-sample prompts laid out (M_l, B, D) in memory, so that a block's (B, M_l, D) is the
    # transposed view of one contiguous chunk: for parts that project them (CVPT)
    PROMPTS_FIRST = False

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
        self.dropout_rate = dropout
        # this forward's per-sample prompts of every block, and the blocks' other dropout
        # masks, made by begin_forward
        self._batch_prompts: Optional[List[Optional[torch.Tensor]]] = None
        self._masks: Dict[int, Dict[str, torch.Tensor]] = {}

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
        return self.training and self.dropout_rate > 0

    def block_masks(self, index: int, batch: int, tokens: int
                    ) -> Dict[str, Tuple[Tuple[int, ...], float]]:
        """The dropout masks prompted block ``index`` takes in a forward of ``batch`` samples
        of ``tokens`` tokens, by name, as (shape, rate), in the order a per-block draw would
        take them: here ``PROMPT_MASK``, its prompts' (B, M_l, D), when dropout is active."""
        return {PROMPT_MASK: ((batch, self.counts[index], self.dim), self.dropout_rate)} \
            if self.per_sample else {}

    def prompt_dtype(self, tokens: torch.Tensor) -> Optional[torch.dtype]:
        """The dtype the blocks use the prompts in, when they should be cast once per forward
        for every block (None: as stored, cast where used)."""
        return None

    def begin_forward(self, tokens: torch.Tensor) -> None:
        """Draw this forward's masks (:meth:`block_masks` of every prompted block, in block
        order) for tokens (B, T, D) in one call, and make every block's per-sample prompts at
        once (:meth:`_batch_every_block`); each block's other masks are kept for it by name
        (:meth:`block_mask`)."""
        self._batch_prompts, self._masks = None, {}
        blocks = [i for i, k in enumerate(self.block_keys) if k is not None]
        if not blocks:
            return
        batch = tokens.shape[0]
        planned = [self.block_masks(i, batch, tokens.shape[1]) for i in blocks]
        flat = [spec for plan in planned for spec in plan.values()]
        drawn = iter(dropout_masks([s for s, _ in flat], [r for _, r in flat], tokens.device))
        per_block = [{name: next(drawn) for name in plan} for plan in planned]
        dtype = self.prompt_dtype(tokens)
        if self.per_sample or dtype is not None:
            prompt_masks = [masks.pop(PROMPT_MASK) for masks in per_block] \
                if self.per_sample else None
            batched = iter(self._batch_every_block(blocks, prompt_masks, dtype))
            self._batch_prompts = [None if k is None else next(batched)
                                   for k in self.block_keys]
        self._masks = {i: masks for i, masks in zip(blocks, per_block) if masks}

    def _batch_every_block(self, blocks: List[int], masks: Optional[List[torch.Tensor]],
                           dtype: Optional[torch.dtype]) -> Tuple[torch.Tensor, ...]:
        """The prompts of ``blocks``: P_l * m_l (B, M_l, D) with the masks, else (M_l, D), cast
        to ``dtype`` if given: one concatenation, one product and one cast for every block,
        then per-block views (laid out (M_l, B, D) in memory with ``PROMPTS_FIRST``)."""
        prompts = torch.cat([self.tokens[self.block_keys[i]] for i in blocks]) \
            if len(blocks) > 1 else self.tokens[self.block_keys[blocks[0]]]
        axis = -2
        if masks is not None:  # (B, sum M_l, D), or (sum M_l, B, D) prompts first
            if self.PROMPTS_FIRST:
                masks = [m.transpose(0, 1) for m in masks]
                prompts, axis = prompts.unsqueeze(1), 0
            prompts = prompts * (torch.cat(masks, dim=axis) if len(masks) > 1 else masks[0])
        if dtype is not None:
            prompts = prompts.to(dtype)
        chunks = prompts.split([self.counts[i] for i in blocks], dim=axis)
        return tuple(c.transpose(0, 1) if axis == 0 else c for c in chunks)

    def block_mask(self, index: int, name: str) -> Optional[torch.Tensor]:
        """This forward's dropout mask ``name`` of block ``index`` (:meth:`block_masks`), or
        None when that dropout is not active."""
        return self._masks.get(index, {}).get(name)

    def train(self, mode: bool = True) -> 'BlockPrompts':
        """Switch mode; what :meth:`begin_forward` made for the other mode is dropped."""
        self._batch_prompts, self._masks = None, {}
        return super().train(mode)

    def for_batch(self, index: int, batch: int) -> Optional[torch.Tensor]:
        """Prompts of block ``index`` for a batch of ``batch`` samples.

        Returns (M_l, D), shared by every sample, when no dropout is active, so that work done on
        the prompts alone (e.g. CVPT's key/value projection) happens once per forward; otherwise
        (B, M_l, D) with independent dropout per sample, from :meth:`begin_forward`. None if the
        block has no prompts.
        """
        p = self.get(index)
        if p is None:
            return None
        made = self._batch_prompts
        if made is not None and (made[index].dim() == 2 or made[index].shape[0] == batch):
            return made[index]
        if self.per_sample:
            raise RuntimeError(f'{type(self).__name__}: per-sample prompts of a batch of {batch} '
                               f'were asked for before begin_forward made them (the backbone '
                               f'calls it at the start of each forward)')
        return p

    def extra_repr(self) -> str:
        return f'counts={self.counts}, dim={self.dim}'
