"""Removes the checkpoint temporaries that killed runs leave in the work dir."""
import os.path as osp
from typing import TYPE_CHECKING

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..utils.atomic_checkpoint import remove_stale_temporaries

if TYPE_CHECKING:
    from mmengine.runner import Runner


@HOOKS.register_module()
class StaleTempCleanupHook(Hook):
    """When training starts or resumes, delete the ``*.pth.tmp<pid>`` files in the work dir whose
    writer is dead (a save killed by SIGKILL or the OOM killer), and log each one. Rank 0 only
    (the rank that saves); temporaries of live processes and other users' files are kept."""

    priority = 'VERY_HIGH'

    def before_train(self, runner: 'Runner') -> None:
        if not is_main_process():
            return
        for path in remove_stale_temporaries(runner.work_dir):
            print_log(f'removed {osp.basename(path)} from {runner.work_dir}: the temporary file of '
                      f'a checkpoint save whose process is gone', logger='current')
