"""Let mmengine checkpoints load under ``torch.load(weights_only=True)`` (torch >= 2.6's default).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``. Its checkpoints hold, besides
tensors, the message hub's ``HistoryBuffer`` objects (numpy arrays inside) and numpy scalars, which
the weights-only unpickler refuses (``UnpicklingError: Weights only load failed``), so ``resume``
and ``load_from`` of a training checkpoint break. The narrow fix: allow-list exactly those types
with ``torch.serialization.add_safe_globals``. Nothing else is allowed, and no environment
variable turns the weights-only check off.

One entry needs care: ``HistoryBuffer.__getstate__`` saves its statistics methods
(``HistoryBuffer.min`` ...), which pickle writes as ``builtins.getattr(HistoryBuffer, 'min')``.
Allowing the real ``getattr`` would let a checkpoint reach any attribute of any allowed object,
which defeats weights-only loading; instead ``builtins.getattr`` is mapped, for the weights-only
unpickler only, to :func:`history_buffer_getattr`, which resolves HistoryBuffer's registered
statistics methods and nothing else.
"""
import pickle
from typing import Any, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals():
    """The numpy callables and classes that pickled arrays, dtypes and scalars refer to."""
    try:  # numpy >= 2 keeps them in numpy._core; pickles name that module
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint64,
        np.uint32, np.uint16, np.uint8,
        np.bool_)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def history_buffer_getattr(obj: object, name: str) -> Any:
    """``getattr`` restricted to the statistics methods of HistoryBuffer (min, max, ...)."""
    if obj is HistoryBuffer and name in HistoryBuffer._statistics_methods:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'weights-only load: getattr({obj!r}, {name!r}) is not allowed; mmseg_prompt allows '
        f'getattr only for HistoryBuffer statistics methods '
        f'{sorted(HistoryBuffer._statistics_methods)}')


def mmengine_checkpoint_globals() -> List[Any]:
    """Every non-tensor global an mmengine 0.10.7 training checkpoint is known to pickle."""
    HistoryBuffer()  # its __init__ registers the built-in statistics methods on the class
    return [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr'), *_numpy_globals()]


def allow_mmengine_checkpoints() -> None:
    """Allow-list the types of :func:`mmengine_checkpoint_globals` for weights-only loading.

    Idempotent; a no-op on a torch without ``add_safe_globals`` (before 2.4, where
    ``torch.load`` did not default to weights-only anyway).
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return
    add(mmengine_checkpoint_globals())  # a set inside torch: adding twice is harmless
