"""A small pretrained trunk made by the project: a tiny timm ViT pretrained on the source task of
``shape_tasks.py`` (per-patch shape segmentation), saved as an ordinary trunk file.

Pretraining (docs/comparison.md): timm's ``VisionTransformer`` (``TINY_TRUNK``: patch 8, width 96,
4 blocks, 64 x 64 input) with a linear classifier on every patch token, trained with AdamW and a
one-cycle schedule to predict the majority shape label of its 8 x 8 patch (5 classes: background
and ``SOURCE_SHAPES``), on batches generated fresh from the seed. Inputs are normalised as the ViT-L
configs do, ``(x - 127.5) / 127.5``. The file holds the trunk's weights without the classifier,
the state dict ``FrozenViT(pretrained=...)`` reads for ``TINY_TRUNK``.

Files are cached by their recipe (``cached_tiny_trunk``): the same recipe is trained once per
cache folder and reused afterwards.
"""
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.atomic_checkpoint import write_atomically
from .shape_tasks import SIZE, SOURCE_SHAPES, source_samples

# The trunk of the comparison configs (configs/example/comparison): timm's ViT with these kwargs.
TINY_TRUNK = dict(model_name='vit_base_patch16_224', img_size=SIZE,
                  model_kwargs=dict(patch_size=8, embed_dim=96, depth=4, num_heads=3))
# The pretraining recipe; every key goes into the cache key.
PRETRAIN_RECIPE = dict(steps=800, batch_size=32, lr=2e-3, weight_decay=0.05, warmup=0.1,
                       seed=0, task='shape_tasks.source_samples v2')
CACHE_ENV = 'MMSEG_PROMPT_CACHE'
NUM_SOURCE_CLASSES = len(SOURCE_SHAPES) + 1


def default_cache_dir() -> Path:
    """``$MMSEG_PROMPT_CACHE/trunks`` if set, else ``~/.cache/mmseg_prompt/trunks``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'mmseg_prompt'
    return Path(root) / 'trunks'


def build_pretraining_model() -> nn.Module:
    """``TINY_TRUNK`` with a linear classifier applied to every token (``global_pool=''``)."""
    return timm.create_model(TINY_TRUNK['model_name'], img_size=TINY_TRUNK['img_size'],
                             num_classes=NUM_SOURCE_CLASSES, global_pool='',
                             **TINY_TRUNK['model_kwargs'])


def normalise(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float, ``(x - 127.5) / 127.5``."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 127.5


def patch_labels(labels: np.ndarray, patch: int) -> torch.Tensor:
    """(N, H, W) pixel labels -> (N, H/p * W/p) majority label of each p x p patch, row-major."""
    n, h, w = labels.shape
    one_hot = F.one_hot(torch.from_numpy(labels), NUM_SOURCE_CLASSES)
    counts = one_hot.view(n, h // patch, patch, w // patch, patch, -1).sum((2, 4))
    return counts.argmax(-1).view(n, -1)


@torch.no_grad()
def patch_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Per-patch accuracy of ``model`` on (images, pixel labels): over all patches and over the
    patches whose majority label is a shape (not background)."""
    model.eval()
    target = patch_labels(labels, model.patch_embed.patch_size[0])
    pred = model(normalise(images))[:, model.num_prefix_tokens:].argmax(-1)
    shapes = target > 0
    return dict(all=(pred == target).float().mean().item(),
                shapes=(pred == target)[shapes].float().mean().item())


def pretrain_tiny_trunk(recipe: Optional[dict] = None,
                        log: Callable[[str], None] = print) -> Tuple[nn.Module, Dict[str, float]]:
    """Pretrain ``build_pretraining_model()`` with ``recipe`` (default ``PRETRAIN_RECIPE``) and
    return (model, held-out patch accuracy) measured on 256 images of another seed."""
    recipe = {**PRETRAIN_RECIPE, **(recipe or {})}
    torch.manual_seed(recipe['seed'])
    rng = np.random.default_rng([recipe['seed'], 0])
    model = build_pretraining_model()
    patch = model.patch_embed.patch_size[0]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe['lr'],
                            weight_decay=recipe['weight_decay'])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe['lr'], total_steps=recipe['steps'], pct_start=recipe['warmup'])
    held_out = source_samples(np.random.default_rng([recipe['seed'], 1]), 256)
    start = time.time()
    steps = recipe['steps']
    for step in range(1, steps + 1):
        model.train()
        images, labels = source_samples(rng, recipe['batch_size'])
        logits = model(normalise(images))[:, model.num_prefix_tokens:]
        loss = F.cross_entropy(logits.reshape(-1, NUM_SOURCE_CLASSES),
                               patch_labels(labels, patch).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % max(1, steps // 6) == 0 or step == steps:  # the last step always
            acc = patch_accuracy(model, *held_out)
            log(f'  pretraining step {step}/{steps}: loss {loss.item():.3f}, held-out patch '
                f'accuracy {acc["all"]:.3f} (shape patches {acc["shapes"]:.3f}), '
                f'{time.time() - start:.0f} s')
    return model, acc


def recipe_key(recipe: dict) -> str:
    """A short hash of the trunk spec and the pretraining recipe, naming the cached file."""
    text = json.dumps(dict(trunk=TINY_TRUNK, recipe=recipe, timm=timm.__version__),
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_tiny_trunk(cache_dir: Optional[Union[str, Path]] = None,
                      recipe: Optional[dict] = None,
                      log: Callable[[str], None] = print,
                      force: bool = False) -> Tuple[Path, dict]:
    """The trunk file of ``recipe`` in ``cache_dir`` (default ``default_cache_dir()``), made by
    ``pretrain_tiny_trunk`` the first time (or with ``force``) and reused afterwards (the log says
    which). Returns (path, info): info holds the recipe, the held-out accuracy and the
    pretraining time."""
    recipe = {**PRETRAIN_RECIPE, **(recipe or {})}
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    stem = f'tiny_vit_shapes_{recipe_key(recipe)}'
    path, info_path = cache_dir / f'{stem}.pth', cache_dir / f'{stem}.json'
    if path.is_file() and info_path.is_file() and not force:
        info = json.loads(info_path.read_text())
        log(f'reusing the pretrained tiny trunk {path} (held-out patch accuracy '
            f'{info["accuracy"]["all"]:.3f}, shape patches {info["accuracy"]["shapes"]:.3f}; '
            f'delete it to pretrain again)')
        return path, info
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f'pretraining the tiny trunk ({recipe["steps"]} steps of per-patch shape '
        f'segmentation, batch {recipe["batch_size"]}); it is cached in {cache_dir}')
    start = time.time()
    model, accuracy = pretrain_tiny_trunk(recipe, log)
    seconds = time.time() - start
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith('head.')}
    write_atomically(path, lambda f: torch.save(trunk, f))
    info = dict(recipe=recipe, trunk=TINY_TRUNK, accuracy=accuracy, seconds=round(seconds, 1),
                threads=torch.get_num_threads())
    write_atomically(info_path, lambda f: f.write(json.dumps(info, indent=1).encode()))
    log(f'pretrained in {seconds:.0f} s: held-out patch accuracy {accuracy["all"]:.3f} (shape '
        f'patches {accuracy["shapes"]:.3f}, chance {1 / NUM_SOURCE_CLASSES:.3f}); saved {path}')
    return path, info
