"""Checkpoints written to a temporary file and renamed, so an interrupted write never leaves a
half-written checkpoint (mmengine's local backend writes straight to the final path).

mmengine's ``save_checkpoint`` serialises the checkpoint and hands the bytes to the file backend
that ``backend_args`` names (``get_file_backend(...).put(bytes, path)``). This module registers
``AtomicLocalBackend`` under the name ``'atomic_local'`` with mmengine's ``register_backend``; the
configs select it with ``default_hooks.checkpoint.backend_args=dict(backend='atomic_local')``.
A process killed during the write (SIGKILL, out of memory) leaves its ``<file>.tmp<pid>``;
``remove_stale_temporaries`` deletes those of dead processes.
"""
import os
import os.path as osp
import re
from pathlib import Path
from typing import BinaryIO, Callable, List, Union

from mmengine.fileio import LocalBackend, register_backend

BACKEND_NAME = 'atomic_local'
# a checkpoint's or mmengine's last_checkpoint file's, as temporary_path names them
_TEMPORARY = re.compile(r'(.+\.pth|last_checkpoint)\.tmp(?P<pid>\d+)')


def temporary_path(filename: str, pid: int) -> str:
    """Where process ``pid`` writes ``filename`` before renaming it."""
    return f'{filename}.tmp{pid}'


def write_atomically(filename: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on ``<filename>.tmp<pid>`` opened for binary writing, then rename it to
    ``filename`` with ``os.replace`` (atomic on one filesystem); on any error the temporary is
    removed and ``filename`` keeps what it had."""
    filename = str(filename)
    tmp = temporary_path(filename, os.getpid())
    try:
        with open(tmp, 'wb') as f:
            write(f)
        os.replace(tmp, filename)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


@register_backend(BACKEND_NAME)
class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose writes (``put``, ``put_text``) go through a temporary
    file and an atomic rename; everything else (reads, listing, removal) is the local backend's."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
        write_atomically(filepath, lambda f: f.write(obj))

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


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
    dead; return their paths. Kept: those of live processes on the same host (a save in progress),
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
