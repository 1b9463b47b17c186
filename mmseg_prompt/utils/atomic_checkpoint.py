"""Checkpoints are written to a temporary file and renamed, so an interrupted write never
leaves a half-written checkpoint (mmengine writes straight to the final path). A process killed
during the write (SIGKILL, out of memory) leaves its ``<checkpoint>.pth.tmp<pid>``;
``remove_stale_temporaries`` deletes those of dead processes."""
import os
import os.path as osp
import re
from typing import List

import mmengine.runner.runner as _runner_module

_ORIGINAL = _runner_module.save_checkpoint
_TEMPORARY = re.compile(r'.+\.pth\.tmp(?P<pid>\d+)')  # a checkpoint's, as temporary_path names it


def temporary_path(filename: str, pid: int) -> str:
    """Where process ``pid`` writes ``filename`` before renaming it."""
    return f'{filename}.tmp{pid}'


def atomic_save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
    """mmengine's ``save_checkpoint`` for local paths, through ``<filename>.tmp<pid>`` and an
    atomic ``os.replace``; other backends (``s3://`` ...) go to mmengine unchanged."""
    if '://' in str(filename):
        return _ORIGINAL(checkpoint, filename, file_client_args=file_client_args,
                         backend_args=backend_args)
    tmp = temporary_path(filename, os.getpid())
    try:
        _ORIGINAL(checkpoint, tmp, file_client_args=file_client_args, backend_args=backend_args)
        os.replace(tmp, filename)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(directory: str) -> List[str]:
    """Delete the checkpoint temporaries (``*.pth.tmp<pid>``) in ``directory`` whose process is
    dead; return their paths. Kept: those of live processes on this machine (a save in progress),
    other users' files, links and anything not a regular file."""
    if not osp.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        match = _TEMPORARY.fullmatch(name)
        path = osp.join(directory, name)
        if match is None or not osp.isfile(path) or osp.islink(path):
            continue
        if os.stat(path).st_uid != os.getuid() or _pid_alive(int(match['pid'])):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:  # removed meanwhile by another process
            continue
        removed.append(path)
    return removed


def use_atomic_checkpoint_saves():
    """Make every mmengine Runner save checkpoints atomically (idempotent)."""
    _runner_module.save_checkpoint = atomic_save_checkpoint
