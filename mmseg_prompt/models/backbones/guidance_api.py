"""What metric guidance reads from a :class:`FrozenViT` (docs/methods.md, "DA-VPT").

``MetricGuidedEncoderDecoder`` calls :meth:`forward_guided` and reads each guided block's
features with :meth:`metric_features`; the guided prompts belong to the backbone's one
:class:`GuidedPromptsContract` part. Nothing is stored on the backbone between calls.
"""
import logging
from typing import Dict, Optional, Tuple, Union

import torch
from mmengine.logging import print_log

from .tuning_part import GuidedPromptsContract

# Per guided block: the tensors its prompt part records for the metric loss (forward_guided).
Guidance = Dict[int, Dict[str, torch.Tensor]]
Features = Tuple[Union[torch.Tensor, list], ...]


class MetricGuidanceAPI:
    """The guidance methods of :class:`FrozenViT` (a mixin: it needs ``guided_part`` and
    ``forward_recorded`` from the backbone)."""

    guided_part: Optional[GuidedPromptsContract]
    _unguided_warned: bool = False  # this mixin's own: whether warn_unguided has warned

    def forward_guided(self, x: torch.Tensor) -> Tuple[Features, Guidance]:
        """``forward`` plus the guided blocks' features, for the metric loss: a dict
        {block index: tensors}, read with :meth:`metric_features`."""
        record: Guidance = {}
        return self.forward_recorded(x, record), record

    @property
    def guided_blocks(self) -> Tuple[int, ...]:
        """Blocks whose prompts metric guidance compares with the classes (none by default)."""
        return () if self.guided_part is None else tuple(self.guided_part.guided_blocks)

    @property
    def num_guided_prompts(self) -> int:
        """M, the prompts (= clusters of classes) of every guided block."""
        counts = {self.guided_part.counts[i] for i in self.guided_blocks}
        if len(counts) != 1:
            raise ValueError(f'guided blocks {self.guided_blocks} must have the same number of '
                             f'prompts (one per cluster), got {sorted(counts)}')
        return counts.pop()

    def metric_sides(self, token_side: Optional[str] = None,
                     prompt_side: Optional[str] = None) -> Tuple[str, str]:
        """The (token side, prompt side) the metric loss compares, defaults filled in; raises on
        a side this backbone's prompt part does not offer."""
        part = self.guided_part
        if not self.guided_blocks:
            raise ValueError(f'{type(self).__name__} has no guided prompt blocks: metric guidance '
                             f'needs DAVPTViT, or a prompt part with guided_blocks=(...)')
        token_side = token_side or part.TOKEN_SIDES[0]
        prompt_side = prompt_side or part.PROMPT_SIDES[0]
        if token_side not in part.TOKEN_SIDES or prompt_side not in part.PROMPT_SIDES:
            raise ValueError(f'{type(self).__name__} ({type(part).__name__}) offers '
                             f'metric_cfg.token_side in {part.TOKEN_SIDES} and prompt_side in '
                             f'{part.PROMPT_SIDES}; got {token_side!r}, {prompt_side!r}')
        return token_side, prompt_side

    def metric_features(self, guidance: Guidance, index: int, token_side: Optional[str] = None,
                        prompt_side: Optional[str] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the metric loss compares in guided block ``index`` of ``guidance`` (from
        :meth:`forward_guided`): tokens (B, N, D) at the patches, prompts (M, D) and the block's
        output class token (B, D); the sides are the prompt part's (:meth:`metric_sides`)."""
        token_side, prompt_side = self.metric_sides(token_side, prompt_side)
        return self.guided_part.metric_features(guidance, self.trunk.blocks, index, token_side,
                                                prompt_side)

    def warn_unguided(self) -> None:
        """Warn once when guided prompts train through a plain forward (no metric loss)."""
        if not self._unguided_warned:
            self._unguided_warned = True
            print_log(f'{type(self).__name__} is training without metric guidance, i.e. as '
                      f'{self.guided_part.METHOD} (a plain forward, no metric loss): the guidance '
                      f'needs model.type="MetricGuidedEncoderDecoder"', logger='current',
                      level=logging.WARNING)
