"""The label check against the model's heads, for runs that skip our tools' pre-run checks.

``tools/train.py`` and ``tools/test.py`` check the heads' class count against the datasets before
a Runner is built and give it to ``CheckSegLabels``. mmseg's stock tools and a Runner built by hand
do neither; this hook (in the schedule bases' ``default_hooks``) does the same on what the Runner
built: before training, the heads against the training dataset's classes; on every batch, the
labels against the heads, naming the label file; and each label file's header once (one
channel, 16 bits only with a loader that keeps them, its image's size: ``label_files.py``),
whatever pipeline the config has.
"""
import os.path as osp
from typing import TYPE_CHECKING, Optional, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH
from mmseg.registry import HOOKS

from mmseg_prompt.datasets.label_check import value_message
from mmseg_prompt.datasets.label_files import LoadWideSegLabels, label_file_problem
from mmseg_prompt.utils.heads import named_heads

from .utils import unwrap_model

if TYPE_CHECKING:
    from mmengine.runner import Runner


def _reads_16_bits(dataset) -> bool:
    """Whether the dataset's pipeline loads labels with LoadWideSegLabels (through dataset
    wrappers such as RepeatDataset: their ``dataset``)."""
    while dataset is not None:
        transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None) or []
        if any(isinstance(t, LoadWideSegLabels) for t in transforms):
            return True
        dataset = getattr(dataset, 'dataset', None)
    return False


def _samples(data_samples) -> list:
    """The data samples of a batch, flattened (a TTA batch holds one list per augmentation)."""
    flat = []
    for s in data_samples or []:
        flat.extend(_samples(s) if isinstance(s, (list, tuple)) else [s])
    return flat


@HOOKS.register_module()
class SegLabelCheckHook(Hook):
    """Stop before training if the heads' num_classes differ from the training dataset's classes;
    stop at a batch whose labels lie outside the heads' classes, naming the label file."""

    priority = 'VERY_HIGH'  # before hooks that read labels in before_train (class mapping)

    def __init__(self):
        self._files_checked = set()  # label files whose header was read (once each)

    def _limit(self, runner) -> Optional[Tuple[int, int, str]]:
        """(smallest num_classes of the heads, ignore_index, its config key), or None."""
        heads = [(key, head) for key, head in
                 named_heads(unwrap_model(runner.model, through_tta=True))
                 if hasattr(head, 'num_classes')]
        if not heads:
            return None
        key, head = min(heads, key=lambda kh: kh[1].num_classes)
        return head.num_classes, getattr(head, 'ignore_index', 255), f'{key}.num_classes'

    def before_train(self, runner: 'Runner') -> None:
        limit = self._limit(runner)
        classes = runner.train_dataloader.dataset.metainfo.get('classes')
        if limit is None or classes is None or len(classes) == limit[0]:
            return
        raise ValueError(
            f'{limit[2]} = {limit[0]}, but train_dataloader.dataset '
            f'({type(runner.train_dataloader.dataset).__name__}) has {len(classes)} classes (its '
            f'metainfo): its labels go up to {len(classes) - 1} and training would fail in the '
            f'loss.\n  Fix: give every head the dataset\'s class count (e.g. --cfg-options '
            f'model.decode_head.num_classes={len(classes)} '
            f'model.auxiliary_head.num_classes={len(classes)}).')

    def _check_files(self, samples, dataloader) -> None:
        """Each label file's header, once: refused as ``label_file_problem`` says."""
        keeps_16_bits = None
        for sample in samples:
            path = sample.metainfo.get('seg_map_path')
            if not isinstance(path, str) or path in self._files_checked or not osp.isfile(path):
                continue
            if keeps_16_bits is None:
                keeps_16_bits = _reads_16_bits(dataloader.dataset)
            problem = label_file_problem(path, sample.metainfo.get('ori_shape'), keeps_16_bits)
            if problem:
                raise ValueError(problem)
            self._files_checked.add(path)

    def _check_batch(self, runner, data_batch, dataloader) -> None:
        if not isinstance(data_batch, dict):
            return
        self._check_files(_samples(data_batch.get('data_samples')), dataloader)
        limit = self._limit(runner)
        if limit is None:
            return
        num, ignore, source = limit
        for sample in _samples(data_batch.get('data_samples')):
            if 'gt_sem_seg' not in sample:
                continue
            seg = sample.gt_sem_seg.data
            bad = ((seg < 0) | (seg >= num)) & (seg != ignore)
            if bad.any():
                raise ValueError(value_message(
                    sample.metainfo.get('seg_map_path'), torch.unique(seg[bad]).cpu().numpy(),
                    num, ignore, sample.metainfo.get('reduce_zero_label'), source))

    def before_train_iter(self, runner: 'Runner', batch_idx: int,
                          data_batch: DATA_BATCH = None) -> None:
        self._check_batch(runner, data_batch, runner.train_dataloader)

    def before_val_iter(self, runner: 'Runner', batch_idx: int,
                        data_batch: DATA_BATCH = None) -> None:
        self._check_batch(runner, data_batch, runner.val_dataloader)

    def before_test_iter(self, runner: 'Runner', batch_idx: int,
                         data_batch: DATA_BATCH = None) -> None:
        self._check_batch(runner, data_batch, runner.test_dataloader)
