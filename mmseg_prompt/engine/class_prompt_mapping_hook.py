"""The class-to-prompt mapping of DA-VPT, built before training and re-clustered during it."""
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..models.segmentors.metric_guided import MetricGuidedEncoderDecoder
from .utils import preserved_rng_states, unwrap_model

if TYPE_CHECKING:
    from mmengine.runner import Runner


@HOOKS.register_module()
class ClassPromptMappingHook(Hook):
    """Builds and maintains ``MetricGuidedEncoderDecoder``'s class-to-prompt mapping.

    - Before training, unless a checkpoint restored a mapping: class means of the frozen,
      prompt-free trunk over a bounded number of training batches (``init_max_iters``; it stops
      earlier once every class has been seen in ``init_images_per_class`` images), then cosine
      k-means (docs/methods.md). The random state is saved and restored around this pass, so the
      training that follows draws the same data with or without it.
    - Every ``interval`` iterations: k-means again on the class means accumulated by the
      prompted model since the last clustering, warm-started from the previous centroids (the
      paper re-clusters every epoch).

    Under distributed training the class statistics are all-reduced and the mapping is the same
    on every rank (see ``MetricGuidedEncoderDecoder.recluster``).
    """

    priority = 'NORMAL'

    def __init__(self, interval: int = 1000, init_max_iters: int = 50,
                 init_images_per_class: int = 10):
        if interval < 1 or init_max_iters < 1:
            raise ValueError('interval and init_max_iters must be >= 1')
        self.interval = interval
        self.init_max_iters = init_max_iters
        self.init_images_per_class = init_images_per_class

    @staticmethod
    def _segmentor(runner):
        model = unwrap_model(runner.model)
        if not isinstance(model, MetricGuidedEncoderDecoder):
            raise TypeError(f'ClassPromptMappingHook needs model.type='
                            f'"MetricGuidedEncoderDecoder", got {type(model).__name__}')
        return model

    def before_train(self, runner: 'Runner') -> None:
        model = self._segmentor(runner)
        if model.mapping_ready():
            print_log('class-to-prompt mapping restored from the checkpoint', logger='current')
            return
        self.build_initial_mapping(runner, model)

    def build_initial_mapping(self, runner: 'Runner', model: nn.Module,
                              dataloader: Optional[object] = None) -> None:
        with preserved_rng_states():
            if dataloader is None:
                cfg = dict(runner.cfg.train_dataloader)
                cfg['persistent_workers'] = False
                dataloader = runner.build_dataloader(cfg, seed=runner.seed)
            images = torch.zeros(model.num_classes)
            was_training = model.training
            model.eval()
            steps = 0
            with model.backbone.tuning_disabled(), torch.no_grad():
                for steps, batch in enumerate(dataloader, 1):
                    data = model.data_preprocessor(batch, training=True)
                    model.collect_class_stats(data['inputs'], data['data_samples'])
                    for ds in data['data_samples']:
                        cls = ds.gt_sem_seg.data.unique()
                        images[cls[cls < model.num_classes].cpu()] += 1
                    if steps >= self.init_max_iters or \
                            images.min() >= self.init_images_per_class:
                        break
            model.train(was_training)
            print_log(f'class-to-prompt mapping: class means of the prompt-free trunk from '
                      f'{steps} batches', logger='current')
            model.recluster()

    def after_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self._segmentor(runner).recluster()
