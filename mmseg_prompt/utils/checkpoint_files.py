"""Checkpoint files checked before they are loaded: a damaged or foreign file is named, with its
size and what to do, instead of torch's reader errors ("failed finding central directory",
"weights_only ... non-allowlisted pickle globals").

``torch.save`` writes a zip archive (its central directory at the end, a ``data.pkl`` member
inside); torch's legacy format is a bare pickle stream. A copy cut short loses the central
directory, so :func:`check_checkpoint_file` reads the directory (not the tensors); anything that
is neither a zip archive with ``data.pkl`` nor a pickle stream is not a PyTorch checkpoint.
"""
import glob
import os.path as osp
import re
import zipfile
from typing import List


class DamagedCheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt or not a PyTorch checkpoint at all."""


def check_checkpoint_file(path: str, what: str = 'checkpoint', fix: str = '') -> None:
    """Raise :class:`DamagedCheckpointError` naming ``path`` (as ``what``), its size, the
    problem and ``fix`` unless it reads as a ``torch.save`` file."""
    size = osp.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(8)
    fix = f' {fix}' if fix else ''
    if head.startswith(b'PK'):  # torch.save's zip archive
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise DamagedCheckpointError(
                f'{what} {path} is truncated or corrupt ({size:,} bytes; {e}): the file was cut '
                f'short or damaged, e.g. by a copy or a save that did not finish.{fix}') from e
        if not any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
            raise DamagedCheckpointError(
                f'{what} {path} is a zip archive but not a PyTorch checkpoint ({size:,} bytes, '
                f'no data.pkl inside).{fix}')
        return
    if head[:1] == b'\x80':  # a pickle stream: torch's legacy format
        return
    raise DamagedCheckpointError(
        f'{what} {path} is not a PyTorch checkpoint ({size:,} bytes, beginning with '
        f'{head!r}; torch.save files are zip archives).{fix}')


def intact_checkpoints(work_dir: str) -> List[str]:
    """The ``iter_*.pth`` / ``epoch_*.pth`` files of ``work_dir`` that pass
    :func:`check_checkpoint_file`, newest (highest number) first."""
    def number(path):
        m = re.search(r'(\d+)\.pth$', path)
        return int(m.group(1)) if m else -1
    found = glob.glob(osp.join(work_dir, 'iter_*.pth')) + \
        glob.glob(osp.join(work_dir, 'epoch_*.pth'))
    intact = []
    for path in sorted(found, key=number, reverse=True):
        try:
            check_checkpoint_file(path)
        except (DamagedCheckpointError, OSError):
            continue
        intact.append(path)
    return intact


def last_checkpoint(work_dir: str) -> str:
    """The file ``work_dir/last_checkpoint`` names (mmengine's record of the latest save), or
    '' when there is none."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return ''
    with open(record) as f:
        return f.read().strip()

