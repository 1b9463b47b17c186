"""Distributed runs without GPUs (gloo), which mmengine 0.10.7 cannot start by itself: its
``init_dist`` calls ``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids``."""
import os

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log


def prepare_cpu_distributed(cfg: Config, launcher: str) -> None:
    """For ``--launcher pytorch`` on a machine without CUDA: start the gloo process group here
    (the Runner then finds it started) and wrap the model without ``device_ids``."""
    if launcher != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return
    dist_cfg = dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'gloo')
    if backend != 'gloo':
        print_log(f'no GPU: distributed backend gloo instead of {backend}', logger='current')
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **dist_cfg)
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                     broadcast_buffers=False)
