"""What tools/train.py and tools/test.py share: loading the config as mmseg's tools do, and the
checks that run before a Runner is built."""
import argparse
import os.path as osp

from mmengine.config import Config

from ..datasets import check_dataset_layout
from .config_checks import check_sizes_fit_patch
from .cpu_distributed import prepare_cpu_distributed
from .label_classes import check_label_classes


def load_tool_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with ``--launcher``, ``--cfg-options`` and ``--work-dir``
    applied; the work dir defaults to ``./work_dirs/<config name>``, as in mmseg's tools."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def check_and_prepare(cfg: Config, launcher: str) -> None:
    """Sizes that fit the patch, the dataset layout, the heads' class count against the datasets
    (it fills the pipelines' CheckSegLabels), and a gloo start for CPU-only launches."""
    check_sizes_fit_patch(cfg)
    check_dataset_layout(cfg)
    check_label_classes(cfg)
    prepare_cpu_distributed(cfg, launcher)
