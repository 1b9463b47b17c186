"""What the hooks share: the segmentor inside a wrapped model, and the random states of Python,
NumPy and torch (CPU and CUDA) to save and restore."""
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper


def unwrap_model(model: nn.Module, through_tta: bool = False) -> nn.Module:
    """The model inside a DDP-style wrapper (mmengine's ``is_model_wrapper``); with
    ``through_tta``, also the segmentor inside a ``SegTTAModel`` (a model without a
    ``decode_head`` that has a ``module``)."""
    model = model.module if is_model_wrapper(model) else model
    if through_tta and not hasattr(model, 'decode_head') and hasattr(model, 'module'):
        model = model.module
    return model


def get_rng_states() -> dict:
    """The Python, NumPy and torch random states (and CUDA's, one per device, where there is
    CUDA), as a dict that can go into a checkpoint."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    """Restore what ``get_rng_states`` returned, also after a checkpoint round trip: the Python
    state's inner tuple may come back as a list, and the torch states as tensors on the GPU (torch
    takes CPU byte tensors only)."""
    python = state['python']
    random.setstate((python[0], tuple(python[1]), python[2]))
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


@contextmanager
def preserved_rng_states() -> Iterator[None]:
    """Run the body, then put every random state back as it was before (also on an error)."""
    state = get_rng_states()
    try:
        yield
    finally:
        set_rng_states(state)
