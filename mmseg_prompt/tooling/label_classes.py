"""One class count per config: the model's heads, checked against the datasets, fills the
pipelines' ``CheckSegLabels``.

Run before a Runner is built (``tools/train.py``, ``tools/test.py``): heads that disagree with
each other or with a dataset's classes stop with both config keys named, and every
``CheckSegLabels`` without ``num_classes`` gets the heads' count, so the class count is written
once, in the model.
"""
from typing import List, Optional, Tuple

from mmengine.config import Config

from ..datasets.layout import dataloader_datasets
from ..utils.heads import named_heads


def head_classes(model_cfg: dict) -> List[Tuple[str, int]]:
    """(config key, num_classes) of each decode and auxiliary head of a model config; a
    ``SegTTAModel`` is looked through (its keys are reported as the wrapped model's)."""
    if model_cfg.get('type') == 'SegTTAModel':
        model_cfg = model_cfg.get('module') or {}
    return [(f'{key}.num_classes', int(head['num_classes']))
            for key, head in named_heads(model_cfg)
            if isinstance(head, dict) and head.get('num_classes') is not None]


def dataset_classes(ds_cfg: dict) -> Optional[Tuple[int, str]]:
    """(class count, where it comes from) of a dataset config: its ``metainfo.classes``, or its
    type's ``METAINFO``; None if neither is known."""
    classes = (ds_cfg.get('metainfo') or {}).get('classes')
    if classes is not None:
        return len(classes), 'its metainfo.classes'
    from mmseg.registry import DATASETS
    dtype = ds_cfg.get('type')
    cls = DATASETS.get(dtype) if isinstance(dtype, str) else dtype
    classes = (getattr(cls, 'METAINFO', None) or {}).get('classes')
    if not classes:
        return None
    return len(classes), f"{cls.__name__}.METAINFO['classes']"


def _fix(num: int, dataset_key: str) -> str:
    return (f'  Fix: give every head the dataset\'s class count (e.g. --cfg-options '
            f'model.decode_head.num_classes={num} model.auxiliary_head.num_classes={num}), '
            f'or give {dataset_key} a metainfo=dict(classes=[...]) of the heads\' classes.')


def check_label_classes(cfg: Config) -> None:
    """Raise ValueError if the heads' num_classes disagree with each other, with a dataloader's
    dataset classes, or with a ``CheckSegLabels(num_classes=...)`` written in a pipeline; then set
    ``num_classes`` of every other ``CheckSegLabels`` of the dataloaders to the heads' count.

    cfg: an mmengine Config of a full mmseg config (modified in place). A model without heads
    that name num_classes is left alone.
    """
    heads = head_classes(cfg.get('model') or {})
    if not heads:
        return
    key0, num = heads[0]
    other = [(k, n) for k, n in heads if n != num]
    if other:
        raise ValueError(
            'the heads disagree on the class count: '
            + ', '.join(f'{k} = {n}' for k, n in heads)
            + '.\n  Fix: give every head the dataset\'s class count.')
    for key, ds in dataloader_datasets(cfg):
        found = dataset_classes(ds)
        if found is not None and found[0] != num:
            raise ValueError(
                f'{key0} = {num}, but {key} ({ds.get("type")}) has {found[0]} classes '
                f'({found[1]}): its labels go up to {found[0] - 1} and training would '
                f'fail in the loss.\n' + _fix(found[0], key))
        for i, step in enumerate(ds.get('pipeline') or []):
            if not (isinstance(step, dict) and step.get('type') == 'CheckSegLabels'):
                continue
            if step.get('num_classes') is None:
                step['num_classes'] = num
            elif int(step['num_classes']) != num:
                raise ValueError(
                    f'{key}.pipeline.{i}.num_classes = {step["num_classes"]}, but {key0} = '
                    f'{num}.\n  Fix: drop num_classes from CheckSegLabels (it follows the '
                    f'heads) or make it equal.')
