"""The label check against the model's heads, for runs that skip our tools' pre-run checks.

``tools/train.py`` and ``tools/test.py`` check the heads' class count against the datasets before
a Runner is built and give it to ``CheckSegLabels``. mmseg's stock tools and a Runner built by hand
do neither; this hook (in the schedule bases' ``default_hooks``) does the same on what the Runner
built: before training, the heads against the training dataset's classes and the header of every
label file of the training and validation sets (one channel, 16 bits only with a loader that
keeps them, its image's size: ``label_files.py``, ``label_precheck.py``), whatever pipeline the
config has; before a validation or test run on its own, that dataset's label files; on every
batch, the labels against the heads, naming the label file.

In a distributed run each rank reads every world_size-th file and the bad ones are gathered,
so that every rank refuses with the same message. Files that passed are recorded in
``<work_dir>/label_files_checked.json`` and skipped by a resumed run while unchanged.
"""
import os.path as osp
import time
from typing import TYPE_CHECKING, Optional, Tuple

import torch
from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from mmseg_prompt.datasets.label_check import value_message
from mmseg_prompt.datasets.label_precheck import (RECORD_NAME, CheckRecord, CheckResult,
                                                  check_label_files, label_pairs,
                                                  refusal_message)
from mmseg_prompt.utils.heads import named_heads

from .utils import unwrap_model

if TYPE_CHECKING:
    from mmengine.runner import Runner


def _samples(data_samples) -> list:
    """The data samples of a batch, flattened (a TTA batch holds one list per augmentation)."""
    flat = []
    for s in data_samples or []:
        flat.extend(_samples(s) if isinstance(s, (list, tuple)) else [s])
    return flat


@HOOKS.register_module()
class SegLabelCheckHook(Hook):
    """Stop before training if the heads' num_classes differ from the training dataset's classes
    or a label file of the training or validation set is unusable (all bad files in one
    message); stop at a batch whose labels lie outside the heads' classes, naming the file."""

    priority = 'VERY_HIGH'  # before hooks that read labels in before_train (class mapping)

    def __init__(self):
        self._prechecked = set()  # ids of the datasets whose label files were checked

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
        if limit is not None and classes is not None and len(classes) != limit[0]:
            raise ValueError(
                f'{limit[2]} = {limit[0]}, but train_dataloader.dataset '
                f'({type(runner.train_dataloader.dataset).__name__}) has {len(classes)} classes '
                f'(its metainfo): its labels go up to {len(classes) - 1} and training would fail '
                f'in the loss.\n  Fix: give every head the dataset\'s class count (e.g. '
                f'--cfg-options model.decode_head.num_classes={len(classes)} '
                f'model.auxiliary_head.num_classes={len(classes)}).')
        loaders = [('train_dataloader', runner.train_dataloader)]
        if runner.val_loop is not None:
            loaders.append(('val_dataloader', runner.val_dataloader))
        self._check_label_files(runner, loaders)

    def before_val(self, runner: 'Runner') -> None:
        self._check_label_files(runner, [('val_dataloader', runner.val_dataloader)])

    def before_test(self, runner: 'Runner') -> None:
        self._check_label_files(runner, [('test_dataloader', runner.test_dataloader)])

    def _check_label_files(self, runner, loaders) -> None:
        """The header of every label file of the dataloaders' datasets not checked yet, split
        across ranks; every rank raises the same ValueError if any file is bad."""
        loaders = [(name, loader.dataset) for name, loader in loaders
                   if id(loader.dataset) not in self._prechecked]
        if not loaders:
            return
        record = CheckRecord(osp.join(runner.work_dir, RECORD_NAME))
        failures = []
        for name, dataset in loaders:
            self._prechecked.add(id(dataset))
            failure = self._check_dataset(f'{name}.dataset', dataset, record)
            if failure:
                failures.append(failure)
        if is_main_process():
            record.save()
        if failures:
            raise ValueError('\n'.join(failures))

    @staticmethod
    def _check_dataset(what: str, dataset, record: CheckRecord) -> str:
        """Check this rank's share of the dataset's label files, gather every rank's result,
        add the passed files to ``record``; the refusal message, or '' if all passed."""
        started = time.perf_counter()
        pairs = label_pairs(dataset)
        rank, world = get_dist_info()
        mine = list(enumerate(pairs))[rank::world]
        share = f' (this rank\'s share: every {world}th)' if world > 1 else ''
        print_log(f'checking the headers of the {len(pairs)} label files of {what} '
                  f'({type(dataset).__name__}){share}', logger='current')

        def progress(done, total):
            print_log(f'label files of {what}: {done}/{total}{share} checked, '
                      f'{time.perf_counter() - started:.1f} s', logger='current')
        try:
            result = check_label_files(mine, record, progress if len(mine) >= 1000 else None)
            error = ''
        except Exception as e:  # every rank must reach the gather, and then stop with it
            result, error = CheckResult([], {}, 0), f'rank {rank}: {type(e).__name__}: {e}'
        results = all_gather_object((result, error)) if world > 1 else [(result, error)]
        errors = [e for _, e in results if e]
        if errors:
            raise RuntimeError(f'checking the label files of {what} failed: ' + '; '.join(errors))
        bad = [b for r, _ in results for b in r.bad]
        for r, _ in results:
            record.files.update(r.passed)
        skipped = sum(r.skipped for r, _ in results)
        print_log(f'label files of {what}: {len(pairs)} checked in '
                  f'{time.perf_counter() - started:.1f} s ({skipped} unchanged since '
                  f'{RECORD_NAME}), {len(bad)} bad', logger='current')
        return refusal_message(bad, len(pairs), what) if bad else ''

    def _check_batch(self, runner, data_batch) -> None:
        if not isinstance(data_batch, dict):
            return
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
        self._check_batch(runner, data_batch)

    def before_val_iter(self, runner: 'Runner', batch_idx: int,
                        data_batch: DATA_BATCH = None) -> None:
        self._check_batch(runner, data_batch)

    def before_test_iter(self, runner: 'Runner', batch_idx: int,
                         data_batch: DATA_BATCH = None) -> None:
        self._check_batch(runner, data_batch)
