"""The hooks' shared helpers: the segmentor inside wrappers, and saving/restoring RNG states."""
import random

import numpy as np
import pytest
import torch
from mmengine.model import MMDistributedDataParallel  # noqa: F401  (registers the wrappers)
from mmengine.registry import MODEL_WRAPPERS

from mmseg_prompt.engine.utils import (get_rng_states, preserved_rng_states, set_rng_states,
                                       unwrap_model)


class _Segmentor(torch.nn.Module):
    decode_head = None


class _TTA(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


@MODEL_WRAPPERS.register_module(force=True)
class _TestWrapper(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


def test_unwrap_model_strips_wrappers_and_optionally_tta():
    seg = _Segmentor()
    assert unwrap_model(seg) is seg
    assert unwrap_model(_TestWrapper(seg)) is seg
    tta = _TTA(seg)
    assert unwrap_model(_TestWrapper(tta)) is tta  # a TTA model is not a wrapper
    assert unwrap_model(_TestWrapper(tta), through_tta=True) is seg
    assert unwrap_model(tta, through_tta=True) is seg
    assert unwrap_model(seg, through_tta=True) is seg


def _draw():
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_preserved_rng_states_puts_every_generator_back():
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    with preserved_rng_states():
        first = _draw()
    with pytest.raises(RuntimeError):
        with preserved_rng_states():
            _draw()
            raise RuntimeError('the body failed')
    again = _draw()
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_rng_states_survive_lists_and_device_tensors(device):
    """A checkpoint round trip may turn the Python state's inner tuple into a list and put the
    torch states on the GPU; set_rng_states takes both."""
    torch.manual_seed(7)
    state = get_rng_states()
    expected = _draw()
    _draw()
    state = dict(state, python=[state['python'][0], list(state['python'][1]),
                                state['python'][2]], torch=state['torch'].to(device))
    set_rng_states(state)
    got = _draw()
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
