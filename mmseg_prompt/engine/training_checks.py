"""Hooks that keep long runs honest: a trunk that provably never changes, identical tuned
weights on every rank, a NaN loss that stops the run before it is saved, and RNG states in
checkpoints so that a resumed run continues exactly."""
import math
import os.path as osp
from typing import TYPE_CHECKING, Optional

from mmengine.dist import all_gather_object, get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..models.backbones.frozen_vit import FrozenViT
from ..models.backbones.provenance import tensors_sha256
from .utils import get_rng_states, set_rng_states, unwrap_model

if TYPE_CHECKING:
    from mmengine.runner import Runner


@HOOKS.register_module()
class FrozenTrunkCheckHook(Hook):
    """At the end of training: the frozen trunk must hash as it did at the start, and (under
    distributed training) the tuned weights must hash the same on every rank. Says so in the log,
    or stops with the first tensor that differs. The start's digest is the backbone's cached
    trunk fingerprint (``FrozenViT.trunk_sha256``, the one checkpoints record) for a float32
    trunk, so a stale fingerprint would show here too; that of its bfloat16 values for a
    bfloat16 one (``stored_trunk_sha256``)."""

    priority = 'LOW'

    def __init__(self):
        self._before: Optional[str] = None

    @staticmethod
    def _backbone(runner):
        backbone = getattr(unwrap_model(runner.model), 'backbone', None)
        if not isinstance(backbone, FrozenViT):
            return None
        return backbone

    def before_train(self, runner: 'Runner') -> None:
        backbone = self._backbone(runner)
        if backbone is not None:
            self._before = backbone.stored_trunk_sha256()

    def after_train(self, runner: 'Runner') -> None:
        backbone = self._backbone(runner)
        if backbone is not None and self._before is not None:
            trunk = backbone.frozen_trunk_tensors()
            after = tensors_sha256(trunk)
            if after != self._before:
                raise RuntimeError(f'the frozen trunk changed during training (sha256 '
                                   f'{self._before[:16]} -> {after[:16]}): something trained it')
            print_log(f'frozen trunk unchanged by training: {len(trunk)} tensors, sha256 '
                      f'{after[:16]}', logger='current')
        model = unwrap_model(runner.model)
        tuned = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        digest = tensors_sha256(tuned)
        if is_distributed():
            digests = all_gather_object(digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f'tuned weights differ across ranks: {digests}')
            print_log(f'tuned weights identical on all {get_world_size()} ranks: sha256 '
                      f'{digest[:16]}', logger='current')
        else:
            print_log(f'tuned weights: {len(tuned)} tensors, sha256 {digest[:16]}',
                      logger='current')


@HOOKS.register_module()
class NaNLossGuardHook(Hook):
    """Stops training at the first non-finite loss, before any checkpoint of that iteration is
    written (it runs before CheckpointHook), naming the iteration and the last good checkpoint."""

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        bad = {k: float(v) for k, v in (outputs or {}).items()
               if 'loss' in k and not math.isfinite(float(v))}
        if not bad:
            return
        last = osp.join(runner.work_dir, 'last_checkpoint')
        good = open(last).read().strip() if osp.exists(last) else None
        raise FloatingPointError(
            f'non-finite loss at iteration {runner.iter + 1}: {bad}. Training stopped; no '
            f'checkpoint of this iteration was written. '
            + (f'The last good checkpoint is {good} (resume with --resume).' if good else
               'No checkpoint was written before it.')
            + ' Try a lower learning rate, gradient clipping (optim_wrapper.clip_grad) or fp32.')


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves the Python, NumPy and torch RNG states in every checkpoint and restores them on
    resume, so that dropout and sampling continue where the interrupted run stopped."""

    def before_save_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        checkpoint['rng_state'] = get_rng_states()

    def after_load_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        state = checkpoint.get('rng_state')
        if state is None or not getattr(runner, '_resume', False):
            return
        set_rng_states(state)  # also from tensors that a resume on GPU loaded onto the GPU
        print_log('RNG states restored from the checkpoint', logger='current')
