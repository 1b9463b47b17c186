"""The contract of a tuning part: what a part may do to the frozen trunk and what it declares.

:class:`FrozenViT` is the one frozen trunk; every tuning method is a part over it, built from a
sub-config (``FrozenViT(parts=[dict(type='LoRA', rank=8), ...])``). A part may, per block
(docs/methods.md, "Tuning parts"):

- **change the token sequence** (:meth:`insert`: VPT-Deep's prompts, put after the prefix
  tokens; the backbone reads the patches after them). At most one part per trunk does
  (:attr:`CHANGES_SEQUENCE`); the block itself runs unchanged;
- **add a branch** at one of the block's two residual sums (:meth:`after_attention`: CVPT's
  cross-attention; :meth:`beside_mlp`: AdaptFormer), which makes the block run step by step
  (``block_steps.py``);
- **add deltas to the trunk's layers** through forward hooks that :meth:`attach` registers on
  them (K/V bias deltas, LoRA): the trunk's tensors never change and its own forward runs.

It declares:

- :attr:`NAME`: its attribute on the backbone, hence its state-dict prefix
  (``backbone.<NAME>.*``); unique per trunk;
- :attr:`TRUNK_ARGS`: the trunk facts its constructor takes from the backbone (``embed_dim``,
  ``depth``, ``patch_size``, ``in_chans``, ``final_norm``: whether the forward runs the trunk's
  final norm); a config that sets one is refused;
- :meth:`weights_layout`: its own options that give its weights their meaning beyond their
  shapes, by its config key; the backbone records them under the part's ``NAME`` with its type
  in every checkpoint's provenance (``provenance.py``) and checks them on load;
- :meth:`no_decay_parameters`: which of its tensors take no weight decay;
- :meth:`attach`: its checks on the trunk (and its hooks);
- :attr:`MERGES_INTO_TRUNK` and :meth:`merge_into`: whether (and how) it folds into the
  trunk's weights, for export;
- :attr:`READS_TRUNK_WEIGHTS`: whether it computes with the trunk's tensors outside the trunk
  modules' forward (CVPT's cross-attention reads each block's qkv and proj), where the other
  parts' hooks do not reach: merging a part into those tensors would change what it computes,
  so the export refuses it;
- :attr:`enabled`: False makes it a no-op, so the backbone runs as the plain frozen trunk
  (``FrozenViT.tuning_disabled``): the backbone skips a disabled part's per-forward work,
  sequence change and branches, and the hooks it registered through
  :meth:`register_output_hook` pass the output through;
- :meth:`begin_forward`: what it prepares once per forward for every block.

Parts that do not change the sequence combine freely: hooks on one layer add their deltas, and
branches at one sum add up.
"""
from abc import ABCMeta, abstractmethod
from functools import partial
from typing import Callable, ClassVar, Dict, Optional, Set, Tuple

import torch
import torch.nn as nn

from .block_steps import Branch, BlockSteps

Record = Dict[int, Dict[str, torch.Tensor]]


class TuningPart(nn.Module, metaclass=ABCMeta):
    """Base of every tuning part; a part overrides what it does, the rest are no-ops
    (``weights_layout`` it must declare)."""

    NAME: ClassVar[str] = ''
    TRUNK_ARGS: ClassVar[Tuple[str, ...]] = ('embed_dim', 'depth')
    CHANGES_SEQUENCE: ClassVar[bool] = False
    METHOD: ClassVar[str] = ''  # the method's name, for logs
    MERGES_INTO_TRUNK: ClassVar[bool] = False  # whether merge_into folds it into the trunk
    READS_TRUNK_WEIGHTS: ClassVar[bool] = False  # computes with trunk tensors beside its forward

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True

    def attach(self, trunk: nn.Module, model_name: str) -> None:
        """Check that ``trunk`` (a timm ViT) suits this part and register its hooks on it."""

    def register_output_hook(self, module: nn.Module, hook: Callable, **kwargs) -> None:
        """Add ``hook(module, inputs, output, part=self, **kwargs)``'s result in place of
        ``module``'s output while this part is enabled (a forward hook; disabled, the output
        passes through). A partial, not a closure: a deep copy of the model (EMA, TTA wrappers)
        then hooks the copy's part, not this one."""
        module.register_forward_hook(partial(_while_enabled, hook=hook, part=self, **kwargs))

    @abstractmethod
    def weights_layout(self) -> dict:
        """This part's options giving its weights their meaning, by its config key (JSON
        values); recorded under :attr:`NAME`, so two parts may use the same key."""

    def no_decay_parameters(self) -> Set[str]:
        """Names (relative to the part) of the parameters that take no weight decay."""
        return set()

    def merge_into(self, trunk: nn.Module) -> None:
        """Fold the part into the trunk's own weights, so that the trunk alone computes what
        trunk and part did (``tools/export_full_checkpoint.py --merge``); only parts with
        ``MERGES_INTO_TRUNK`` can."""
        raise TypeError(f'{self.METHOD or type(self).__name__} cannot be merged into the '
                        f'trunk\'s weights (MERGES_INTO_TRUNK is False)')

    # -- per forward and per block; ``index`` is the block's position in the trunk
    def begin_forward(self, tokens: torch.Tensor) -> None:
        """Called once per backbone forward with the embedded tokens (B, T, D), before the first
        block: work for every block done at once (e.g. all blocks' dropout masks in one draw)."""

    def insert(self, index: int, x: torch.Tensor, num_prefix: int,
               present: int = 0) -> Tuple[torch.Tensor, int]:
        """Tokens (B, n + present + N, D), with the ``present`` tokens the previous block ran
        with after the n prefix tokens, -> the sequence block ``index`` runs on (its own tokens
        in their place), and how many there are after the prefix tokens."""
        return x, 0

    def after_attention(self, index: int, block: nn.Module) -> Optional[Branch]:
        """A branch f(x) added after block ``index``'s self-attention sum, or None."""
        return None

    def beside_mlp(self, index: int, block: nn.Module) -> Optional[Branch]:
        """A branch g(x) of the MLP's input stream added beside block ``index``'s MLP, or None."""
        return None


class GuidedPromptsContract(TuningPart):
    """A prompt part whose :attr:`guided_blocks` metric guidance may compare with the classes
    (DA-VPT; docs/methods.md, "DA-VPT"): it records a guided block's features and says what the
    metric loss compares. At most one part per trunk has guided blocks."""

    TOKEN_SIDES: ClassVar[Tuple[str, ...]] = ()
    PROMPT_SIDES: ClassVar[Tuple[str, ...]] = ()
    counts: list
    guided_blocks: Tuple[int, ...]  # blocks whose prompts are class proxies; () for none

    @abstractmethod
    def guidance(self, index: int, steps: BlockSteps, start: int) -> Dict[str, torch.Tensor]:
        """What guided block ``index`` records from its intermediates; the patches start at
        position ``start`` of the sequence."""

    @abstractmethod
    def metric_features(self, record: Record, blocks: nn.ModuleList, index: int,
                        token_side: str, prompt_side: str
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, N, D), prompts (M, D) and the output class token (B, D) of guided block
        ``index`` of ``record``."""


def _while_enabled(module: nn.Module, inputs, output, *, hook: Callable, part: TuningPart,
                   **kwargs):
    """A part's forward hook, run only while the part is enabled (None: output unchanged)."""
    return hook(module, inputs, output, part=part, **kwargs) if part.enabled else None
