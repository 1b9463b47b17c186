"""Count the ATen operators a piece of eager code dispatches: the kernel launches it costs.

Each non-view operator that reaches the dispatcher below autograd launches (at least) one kernel
on a GPU; views launch none. The count does not depend on the device, so it is made on the CPU
(where the backward runs on the calling thread, inside the mode). docs/cost.md, "Kernel
launches", has the table and the command.
"""
from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

# The operators that only copy or convert: ``_to_copy`` (dtype casts, autocast's included),
# ``clone`` and ``copy_``
COPIES = ('_to_copy', 'clone', 'copy_')


class KernelOpCounter(TorchDispatchMode):
    """``with KernelOpCounter() as ops: ...``; then ``ops.counts`` maps an operator's name
    (``'mm'``, ``'_to_copy'``, ...) to how often it ran, views left out."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def copies(self) -> int:
        return sum(self.counts[name] for name in COPIES)
