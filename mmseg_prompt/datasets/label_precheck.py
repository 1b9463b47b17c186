"""Every label file of a dataset checked from its header before the first iteration.

A bad label file met late stops a long run hours in (or, cast to 8 bits, trains silently), so
``SegLabelCheckHook`` reads the header of every label file of the training and validation sets
before training starts (docs/user_guides/data.md, "Label files"):

- :func:`label_pairs`: the (label, image) files of a dataset, through mmengine's wrappers;
- :func:`check_label_files`: :func:`~.label_files.label_file_issue` on each, skipping those a
  :class:`CheckRecord` says were checked unchanged;
- :class:`CheckRecord`: ``<work_dir>/label_files_checked.json``, each passed label file with its
  size and mtime and its image's, so that a resumed run reads only new or changed files;
- :func:`refusal_message`: one message for all bad files, with the fixes.
"""
import json
import os
import os.path as osp
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .label_files import LabelFileIssue, LoadWideSegLabels, image_shape, label_file_issue

RECORD_NAME = 'label_files_checked.json'
RECORD_VERSION = 1
MAX_LISTED = 20  # bad files named in the message; the rest are counted


class LabelPair(NamedTuple):
    label: str
    image: Optional[str]
    keeps_16_bits: bool  # the dataset's pipeline loads labels with LoadWideSegLabels


class BadLabel(NamedTuple):
    index: int  # the pair's position in the dataset's list (for ordering across ranks)
    pair: LabelPair
    issue: LabelFileIssue


def _loads_wide(dataset) -> bool:
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None) or []
    return any(isinstance(t, LoadWideSegLabels) for t in transforms)


def label_pairs(dataset, keeps_16_bits: bool = False) -> List[LabelPair]:
    """The label files of ``dataset`` (``seg_map_path`` of ``get_data_info(i)``), each once, in
    the dataset's order, with the image file (``img_path``) and whether a pipeline on the way
    down loads 16 bits. Looks through mmengine's wrappers: ``datasets`` (ConcatDataset),
    ``dataset`` (RepeatDataset, ClassBalancedDataset, MultiImageMixDataset)."""
    keeps_16_bits = keeps_16_bits or _loads_wide(dataset)
    if hasattr(dataset, 'datasets'):
        pairs = [p for d in dataset.datasets for p in label_pairs(d, keeps_16_bits)]
    elif getattr(dataset, 'dataset', None) is not None:
        pairs = label_pairs(dataset.dataset, keeps_16_bits)
    else:
        pairs = []
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            label, image = info.get('seg_map_path'), info.get('img_path')
            if isinstance(label, str):
                pairs.append(LabelPair(label, image if isinstance(image, str) else None,
                                       keeps_16_bits))
    seen, unique = set(), []
    for p in pairs:
        if p.label not in seen:
            seen.add(p.label)
            unique.append(p)
    return unique


def _stat(path: Optional[str]) -> list:
    """[size, mtime in ns] of a file, or [] if there is none."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        st = None
    return [st.st_size, st.st_mtime_ns] if st else []


class CheckRecord:
    """The label files that passed, as JSON in ``path``: label path -> [its size and mtime,
    the image path, the image's size and mtime, keeps_16_bits]. A file is skipped only if all
    of these are unchanged; a missing or unreadable record is an empty one."""

    def __init__(self, path: str):
        self.path = path
        self.files: Dict[str, list] = {}
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get('version') == RECORD_VERSION:
                self.files = dict(data.get('files') or {})
        except (OSError, ValueError, AttributeError):
            pass

    @staticmethod
    def entry(pair: LabelPair) -> list:
        return [_stat(pair.label), pair.image, _stat(pair.image), pair.keeps_16_bits]

    def unchanged(self, pair: LabelPair) -> bool:
        return self.files.get(pair.label) == self.entry(pair)

    def save(self) -> None:
        """Written through a temporary and a rename: a run killed meanwhile leaves the old one."""
        from ..utils.atomic_checkpoint import write_atomically
        os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
        data = json.dumps(dict(version=RECORD_VERSION, files=self.files)).encode()
        write_atomically(self.path, lambda f: f.write(data))


class CheckResult(NamedTuple):
    bad: List[BadLabel]
    passed: Dict[str, list]  # label path -> its CheckRecord entry
    skipped: int  # found unchanged in the record


def check_pair(pair: LabelPair) -> Optional[LabelFileIssue]:
    """The header check of one label file against its image's size; None if it passes or is
    no local file (a missing label is the dataset layout check's, a remote one the loader's)."""
    if not osp.isfile(pair.label):
        return None
    try:
        shape = image_shape(pair.image) if pair.image and osp.isfile(pair.image) else None
        return label_file_issue(pair.label, shape, pair.keeps_16_bits, pair.image,
                                describe_values=False)
    except OSError as e:
        return LabelFileIssue(f'label file {pair.label} cannot be read: {e}.',
                              'check that the file is complete and readable.')


def check_label_files(pairs: Sequence[Tuple[int, LabelPair]],
                      record: Optional[CheckRecord] = None,
                      progress: Optional[Callable[[int, int], None]] = None) -> CheckResult:
    """Check each (index, pair) of ``pairs`` (:func:`check_pair`), skipping those ``record``
    holds unchanged; ``progress(done, total)`` is called every tenth of the way."""
    bad, passed, skipped = [], {}, 0
    step = max(1, len(pairs) // 10)
    for done, (index, pair) in enumerate(pairs, 1):
        if record is not None and record.unchanged(pair):
            skipped += 1
        else:
            issue = check_pair(pair)
            if issue is None:
                passed[pair.label] = CheckRecord.entry(pair)
            else:
                bad.append(BadLabel(index, pair, issue))
        if progress is not None and (done % step == 0 or done == len(pairs)):
            progress(done, len(pairs))
    return CheckResult(bad, passed, skipped)


def refusal_message(bad: Sequence[BadLabel], total: int, what: str) -> str:
    """One message for the bad label files of ``what`` (e.g. 'train_dataloader.dataset'), which
    has ``total`` label files: the first MAX_LISTED problems (a 16-bit file's largest values
    decoded), a count of the rest, and each distinct fix once."""
    bad = sorted(bad, key=lambda b: b.index)
    listed = []
    for b in bad[:MAX_LISTED]:
        try:  # again with describe_values: a listed 16-bit file's values are named
            shape = image_shape(b.pair.image) if b.pair.image else None
            issue = label_file_issue(b.pair.label, shape, b.pair.keeps_16_bits, b.pair.image)
        except OSError:
            issue = None
        listed.append(issue or b.issue)
    lines = [f'{len(bad)} of {total} label files of {what} cannot be used (each label file\'s '
             f'header was checked before the first iteration; nothing was trained):']
    lines += [f'  - {issue.problem}' for issue in listed]
    if len(bad) > MAX_LISTED:
        lines.append(f'  ... and {len(bad) - MAX_LISTED} more (the first {MAX_LISTED} are listed)')
    fixes = list(dict.fromkeys(b.issue.fix for b in bad))
    lines += [f'  Fix: {fix}' for fix in fixes]
    return '\n'.join(lines)

