"""What a checkpoint's tensors lack, add or reshape against a model's: the one comparison behind
every strict load of this package (the trunk file, the backbone's tuned weights, the segmentor's
neck and heads); each caller words its own error."""
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Tuple

import torch

Shape = Tuple[int, ...]


@dataclass
class Mismatch:
    """One tensor that differs: ``kind`` 'missing' (in the model, not the checkpoint), 'shape'
    or 'extra' (in the checkpoint, not the model); ``saved`` / ``model`` its shapes there."""
    kind: str
    key: str
    saved: Optional[Shape] = None
    model: Optional[Shape] = None


@dataclass
class StateDictDiff:
    """``in_model_order``: the missing and reshaped tensors in the model's order; ``extra``: the
    checkpoint's tensors under the prefix that the model does not have."""
    in_model_order: List[Mismatch] = field(default_factory=list)
    extra: List[Mismatch] = field(default_factory=list)

    def of_kind(self, kind: str) -> List[Mismatch]:
        return [m for m in self.in_model_order + self.extra if m.kind == kind]


def diff_state_dict(state_dict: Mapping[str, torch.Tensor],
                    expected: Mapping[str, torch.Tensor],
                    prefix: str = '',
                    ignore_extra: Callable[[str], bool] = lambda key: False) -> StateDictDiff:
    """Compare ``state_dict`` with ``expected`` (names without ``prefix``): every expected tensor
    must be in ``state_dict`` under ``prefix + name`` with its shape, and ``state_dict`` must hold
    nothing else under ``prefix`` (names for which ``ignore_extra(name)`` is true excepted)."""
    diff = StateDictDiff()
    for name, tensor in expected.items():
        got = state_dict.get(prefix + name)
        if got is None:
            diff.in_model_order.append(Mismatch('missing', prefix + name,
                                                model=tuple(tensor.shape)))
        elif tuple(got.shape) != tuple(tensor.shape):
            diff.in_model_order.append(Mismatch('shape', prefix + name, tuple(got.shape),
                                                tuple(tensor.shape)))
    for key, tensor in state_dict.items():
        name = key[len(prefix):]
        if key.startswith(prefix) and name not in expected and not ignore_extra(name):
            diff.extra.append(Mismatch('extra', key, saved=tuple(tensor.shape)))
    return diff
