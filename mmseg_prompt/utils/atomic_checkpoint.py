"""Checkpoints are written to a temporary file and renamed, so an interrupted write never
leaves a half-written checkpoint (mmengine writes straight to the final path)."""
import os
import os.path as osp

import mmengine.runner.runner as _runner_module

_ORIGINAL = _runner_module.save_checkpoint


def atomic_save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
    """mmengine's ``save_checkpoint`` for local paths, through ``<filename>.tmp<pid>`` and an
    atomic ``os.replace``; other backends (``s3://`` ...) go to mmengine unchanged."""
    if '://' in str(filename):
        return _ORIGINAL(checkpoint, filename, file_client_args=file_client_args,
                         backend_args=backend_args)
    tmp = f'{filename}.tmp{os.getpid()}'
    try:
        _ORIGINAL(checkpoint, tmp, file_client_args=file_client_args, backend_args=backend_args)
        os.replace(tmp, filename)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def use_atomic_checkpoint_saves():
    """Make every mmengine Runner save checkpoints atomically (idempotent)."""
    _runner_module.save_checkpoint = atomic_save_checkpoint
