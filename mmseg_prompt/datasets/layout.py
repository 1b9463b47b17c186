"""Check a config's dataset folders before training, with an error that says how to fix them.

mmseg itself fails late and tersely on a missing dataset (``AssertionError`` from
``fileio.exists``, or an empty dataset and a sampler error). :func:`check_dataset_layout`
resolves the same paths as ``BaseSegDataset`` (``data_prefix`` and ``ann_file`` joined to
``data_root`` unless absolute) and raises :class:`DatasetLayoutError` naming the config key, the
missing path, the expected folder tree and how to prepare the data.
"""
import os
import os.path as osp
from typing import Iterator, List, Tuple

from mmengine.config import Config
from mmengine.fileio import join_path
from mmengine.utils import is_abs

DATALOADER_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
# BaseSegDataset's default data_prefix
DEFAULT_PREFIX = dict(img_path='', seg_map_path='')

ADE20K_URL = 'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip'
VOC2010_URL = 'http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar'
CONTEXT_JSON_URL = 'https://codalabuser.blob.core.windows.net/public/trainval_merged.json'
DETAIL_API_URL = 'https://github.com/zhanghang1989/detail-api'

ADE20K_HELP = f"""\
Expected layout (ADE20KDataset, data_root = data/ade/ADEChallengeData2016):
  data/ade/ADEChallengeData2016/
    images/
      training/       ADE_train_00000001.jpg ...
      validation/     ADE_val_00000001.jpg ...
    annotations/
      training/       ADE_train_00000001.png ... (0 = other, 1..150)
      validation/     ADE_val_00000001.png ...
To prepare it: download ADEChallengeData2016.zip ({ADE20K_URL})
  and unzip it into data/ade/:  unzip ADEChallengeData2016.zip -d data/ade/"""

PASCAL_CONTEXT_HELP = f"""\
Expected layout (PASCAL Context, data_root = data/VOCdevkit/VOC2010):
  data/VOCdevkit/VOC2010/
    JPEGImages/                     2008_000002.jpg ...
    SegmentationClassContext/       2008_000002.png ... (converted labels: 0 = background, 1..59)
    ImageSets/SegmentationContext/
      train.txt, val.txt            one image id per line
To prepare it: download the VOC2010 trainval tar ({VOC2010_URL}),
  extract it into data/ (giving data/VOCdevkit/VOC2010), download trainval_merged.json
  ({CONTEXT_JSON_URL}) into data/VOCdevkit/VOC2010/, install the `detail` API
  ({DETAIL_API_URL}, PythonAPI folder) and convert with mmseg's
  tools/dataset_converters/pascal_context.py (also shipped in the mmseg package under .mim/tools):
    python tools/dataset_converters/pascal_context.py data/VOCdevkit \\
        data/VOCdevkit/VOC2010/trainval_merged.json
  which writes SegmentationClassContext/ and ImageSets/SegmentationContext/{{train,val}}.txt."""

LAYOUT_HELP = {'ADE20KDataset': ADE20K_HELP, 'PascalContextDataset59': PASCAL_CONTEXT_HELP,
               'PascalContextDataset': PASCAL_CONTEXT_HELP}


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder or file that a config points to is missing or empty."""


def _type_name(dataset_type):
    """'ADE20KDataset' from 'ADE20KDataset', 'mmseg.ADE20KDataset' or the class itself."""
    name = getattr(dataset_type, '__name__', dataset_type)
    return str(name).rsplit('.', 1)[-1]


def layout_help(dataset_cfg: dict, key: str) -> str:
    """The expected tree, how to prepare it and how to point elsewhere, for the dataset at key."""
    type_name = _type_name(dataset_cfg.get('type'))
    tree = LAYOUT_HELP.get(type_name)
    if tree is None:
        prefix = {**DEFAULT_PREFIX, **(dataset_cfg.get('data_prefix') or {})}
        ann_file = dataset_cfg.get('ann_file') or ''
        tree = (f'Expected layout ({type_name}):\n'
                f'  {dataset_cfg.get("data_root") or "."}/\n'
                f'    {prefix["img_path"] or "."}/    images, e.g. <stem>.jpg\n'
                f'    {prefix["seg_map_path"] or "."}/    label maps <stem>.png (one per image, '
                f'pixel values = class ids)'
                + (f'\n    {ann_file}    one image stem per line' if ann_file else ''))
    return (f'{tree}\n'
            f'Data stored elsewhere: add  --cfg-options {key}.data_root=/path/to/data_root  '
            f'(train/val/test_dataloader each have their own data_root).\n'
            f'To try things without the download: `python tools/demo.py` makes a small synthetic '
            f'dataset in this layout.')


def _has_file(path):
    """Whether the folder path holds at least one file (at any depth)."""
    return any(files for _, _, files in os.walk(path))


def _show(path):
    """path, with its absolute form where it is relative."""
    return path if osp.isabs(path) else f'{path} (absolute: {osp.abspath(path)})'


def _dataset_problems(ds, key):
    """(config key, path, problem) for each missing piece of one dataset dict, [] if none."""
    data_root = ds.get('data_root')
    if data_root and not osp.isdir(data_root):
        return [(f'{key}.data_root', data_root, 'data_root folder not found')]
    problems = []
    prefix = {**DEFAULT_PREFIX, **(ds.get('data_prefix') or {})}
    for name in ('img_path', 'seg_map_path'):
        if name not in prefix or not isinstance(prefix[name], str):
            continue
        path = prefix[name]
        if not is_abs(path) and data_root:  # as BaseDataset._join_prefix
            path = join_path(data_root, path)
        what = 'image' if name == 'img_path' else 'label'
        if not osp.isdir(path):
            problems.append((f'{key}.data_prefix.{name}', path, f'{what} folder not found'))
        elif not _has_file(path):
            problems.append((f'{key}.data_prefix.{name}', path, f'{what} folder is empty'))
    ann_file = ds.get('ann_file') or ''
    if ann_file:
        if not is_abs(ann_file) and data_root:
            ann_file = join_path(data_root, ann_file)
        if not osp.exists(ann_file):
            problems.append((f'{key}.ann_file', ann_file, 'ann_file (split list) not found'))
    if not problems:
        problems += _unlabelled_images(ds, key, data_root, prefix, ann_file)
    return problems


def _suffixes(ds):
    """(img_suffix, seg_map_suffix) of a dataset dict, defaulting to its class's defaults."""
    import inspect

    from mmseg.registry import DATASETS
    defaults = {}
    cls = DATASETS.get(ds.get('type')) if isinstance(ds.get('type'), str) else ds.get('type')
    if cls is not None:
        for klass in inspect.getmro(cls):
            if '__init__' in vars(klass):
                for name, prm in inspect.signature(klass.__init__).parameters.items():
                    if name in ('img_suffix', 'seg_map_suffix'):
                        defaults.setdefault(name, prm.default)
    return (ds.get('img_suffix', defaults.get('img_suffix', '.jpg')),
            ds.get('seg_map_suffix', defaults.get('seg_map_suffix', '.png')))


def _unlabelled_images(ds, key, data_root, prefix, ann_file):
    """A problem entry if some image (listed in ann_file, or found in the image folder) has no
    label file, as mmseg pairs them: same relative path, the label suffix."""
    if not all(isinstance(prefix.get(n), str) for n in ('img_path', 'seg_map_path')):
        return []
    img_dir, seg_dir = (prefix[n] if is_abs(prefix[n]) or not data_root
                        else join_path(data_root, prefix[n]) for n in ('img_path', 'seg_map_path'))
    img_suffix, seg_suffix = _suffixes(ds)
    if ann_file and osp.isfile(ann_file):
        with open(ann_file) as f:
            stems = [line.strip() for line in f if line.strip()]
    else:
        stems = [osp.relpath(osp.join(root, name), img_dir)[:-len(img_suffix)]
                 for root, _, names in os.walk(img_dir) for name in names
                 if name.endswith(img_suffix)]
    missing = [s for s in stems if not osp.isfile(osp.join(seg_dir, s + seg_suffix))]
    if not missing:
        return []
    example = osp.join(seg_dir, missing[0] + seg_suffix)
    return [(f'{key}.data_prefix.seg_map_path', example,
             f'{len(missing)} of {len(stems)} images have no label file (e.g. '
             f'{missing[0] + img_suffix} needs')]


def leaf_datasets(ds: dict, key: str) -> List[Tuple[str, dict]]:
    """(key, dataset dict) for each real dataset in ds, looking through dataset wrappers."""
    if not isinstance(ds, dict):
        return []
    if isinstance(ds.get('dataset'), dict):
        return leaf_datasets(ds['dataset'], f'{key}.dataset')
    if isinstance(ds.get('datasets'), (list, tuple)):
        return [leaf for i, sub in enumerate(ds['datasets'])
                for leaf in leaf_datasets(sub, f'{key}.datasets.{i}')]
    if any(k in ds for k in ('data_root', 'data_prefix', 'ann_file')):
        return [(key, ds)]
    return []


def dataloader_datasets(cfg: Config) -> Iterator[Tuple[str, dict]]:
    """(key, dataset dict) of each real dataset of the train/val/test dataloaders that are set,
    looking through dataset wrappers (``leaf_datasets``)."""
    for loader_key in DATALOADER_KEYS:
        loader = cfg.get(loader_key)
        if isinstance(loader, dict):
            yield from leaf_datasets(loader.get('dataset'), f'{loader_key}.dataset')


def check_dataset_layout(cfg: Config) -> None:
    """Raise DatasetLayoutError if a dataloader's dataset folders are missing or empty.

    cfg: an mmengine Config (or dict) of a full mmseg config; the train/val/test dataloaders that
    are set are checked. Returns None when every folder and ann_file is in place.
    """
    failing = []
    for key, ds in dataloader_datasets(cfg):
        problems = _dataset_problems(ds, key)
        if problems:
            failing.append((key, ds, problems))
    if not failing:
        return None
    lines = ['Dataset files not found:']
    for _, ds, problems in failing:
        for cfg_key, path, what in problems:
            lines.append(f'  {cfg_key}: {what}: {_show(path)}')
    helped = set()
    for key, ds, _ in failing:
        type_name = _type_name(ds.get('type'))
        if type_name not in helped:
            helped.add(type_name)
            lines += ['', layout_help(ds, key)]
    raise DatasetLayoutError('\n'.join(lines))
