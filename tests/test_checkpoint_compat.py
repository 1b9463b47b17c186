"""mmengine 0.10.7 checkpoints load on a torch whose torch.load defaults to weights_only=True."""
import os
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmseg_prompt.utils.checkpoint_compat import allow_mmengine_checkpoints


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, labels, mode='tensor'):
        inputs = torch.stack(inputs)
        labels = torch.stack(labels)
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - labels) ** 2).mean())
        return out


class ToyData(Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g), labels=torch.randn(1, generator=g))


def make_runner(work_dir, max_iters, resume=False, load_from=None):
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=2, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=4,
                             by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume, load_from=load_from, randomness=dict(seed=0),
        default_scope='mmengine', experiment_name=f'toy_{max_iters}_{resume}')


@pytest.fixture(scope='module')
def two_iter_checkpoint(tmp_path_factory):
    work = tmp_path_factory.mktemp('run')
    runner = make_runner(work, max_iters=2)
    runner.train()
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file()
    return ckpt


def test_no_blunt_environment_switch_is_used():
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    assert 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ


def test_plain_torch_load_refuses_the_checkpoint_without_the_allow_list(two_iter_checkpoint):
    """The trap is real on this torch: with the allow-list cleared, weights_only load fails."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            torch.load(two_iter_checkpoint, map_location='cpu')
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)
    allow_mmengine_checkpoints()
    ckpt = torch.load(two_iter_checkpoint, map_location='cpu')  # weights_only=True by default
    assert ckpt['meta']['iter'] == 2
    assert 'message_hub' in ckpt and 'optimizer' in ckpt


def test_checkpoint_holds_nothing_outside_the_allow_list(two_iter_checkpoint):
    allow_mmengine_checkpoints()
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(two_iter_checkpoint))
    allowed = {g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
               for g in torch.serialization.get_safe_globals()}
    assert set(unsafe) <= allowed, set(unsafe) - allowed


def test_getattr_is_allowed_only_for_history_buffer_statistics():
    """The stand-in for builtins.getattr must not open any other attribute."""
    from mmengine.logging import HistoryBuffer
    from mmseg_prompt.utils.checkpoint_compat import history_buffer_getattr
    assert history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for obj, name in [(HistoryBuffer, '__init__'), (HistoryBuffer, 'update'), (os, 'system'),
                      (torch, 'load')]:
        with pytest.raises(pickle.UnpicklingError, match='not allowed'):
            history_buffer_getattr(obj, name)


def test_malicious_getattr_pickle_is_still_refused(tmp_path):
    """A checkpoint that uses getattr beyond the statistics methods fails to load."""
    from mmengine.logging import HistoryBuffer
    allow_mmengine_checkpoints()

    class Evil:
        def __reduce__(self):  # the first step of reaching HistoryBuffer.__init__.__globals__
            return (getattr, (HistoryBuffer, '__init__'))

    f = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match='is not allowed'):
        torch.load(f)


def test_runner_resumes_from_its_own_checkpoint(two_iter_checkpoint, tmp_path):
    allow_mmengine_checkpoints()
    runner = make_runner(tmp_path, max_iters=4, resume=True, load_from=str(two_iter_checkpoint))
    runner.train()
    # resumed at iteration 2 (not from scratch) and went on to 4
    assert runner.iter == 4
    assert (tmp_path / 'iter_4.pth').is_file()
    hub = torch.load(tmp_path / 'iter_4.pth', map_location='cpu')['message_hub']
    # the loss history spans the resumed run: 2 iterations before and 2 after
    assert len(hub['log_scalars']['train/loss'].data[0]) == 4
