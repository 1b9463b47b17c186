"""A small pretrained trunk made by the project: a tiny timm ViT pretrained on the source task of
``shape_tasks.py`` (per-patch shape segmentation), saved as an ordinary trunk file.

Pretraining (docs/comparison.md, "The pretrained trunk"): timm's ``VisionTransformer``
(``TINY_TRUNK``: patch 8, width 96, 4 blocks, 64 x 64 input), trained with AdamW and a one-cycle
schedule on batches generated fresh from the seed. The default recipe has one term, the shape
loss; two more can be switched on by their weights (docs/comparison.md, "Hue-invariant
trunks"):

    L = CE(head(norm(z_L(x))), y)                                     (the default)
        + CE(head(norm(z_L(x'))), y)
          + w_inv * ||z_L(x) - z_L(x')||^2 / ||z_L - mean(z_L)||^2   (hue_invariance > 0)
        + w_colour * ||A z_{L-1}(x) - c(x)||^2                        (colour_kept > 0)

- the shape loss: a linear classifier on every patch token of the last block ``z_L`` predicts the
  majority shape label of its 8 x 8 patch (5 classes: background and ``SOURCE_SHAPES``); with
  ``hue_invariance``, also on each image's hue-rotated copy ``x' = rotate_hue(x, theta)``,
  theta ~ U[0, 2 pi);
- hue invariance of the last block: the last-block patch tokens of the two copies are pulled
  together, their mean squared distance divided by the tokens' spread about their mean (over the
  batch). The ratio is scale-free: a large constant added to every token (which makes
  LayerNorm-ed tokens invariant while the hue stays in them) does not lower it;
- colour kept up to the last block's input: a linear map ``A`` of each patch token after block
  L-1 regresses ``c(x)``, the patch's mean normalised RGB.

Inputs are normalised as the ViT-L configs do, ``(x - 127.5) / 127.5``. The file holds the trunk's
weights without the classifier and ``A``: the state dict ``FrozenViT(pretrained=...)`` reads for
``TINY_TRUNK``.

Files are cached by their recipe and the CPU kernels that made them (``cached_tiny_trunk``): the
same recipe is trained once per cache folder and kernel set, and reused afterwards.
"""
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.utils import patch_labels as grid_patch_labels
from ..utils.atomic_checkpoint import write_atomically
from ..utils.pinned_numerics import numerics_record
from .shape_tasks import SIZE, SOURCE_SHAPES, source_samples

# The trunk of the comparison configs (configs/example/comparison): timm's ViT with these kwargs.
TINY_TRUNK = dict(model_name='vit_base_patch16_224', img_size=SIZE,
                  model_kwargs=dict(patch_size=8, embed_dim=96, depth=4, num_heads=3))
# The pretraining recipe (docs/comparison.md); every key goes into the cache key. batch_size counts
# the source images of a step (with hue_invariance, each also enters as its hue-rotated copy).
PRETRAIN_RECIPE = dict(steps=800, batch_size=32, lr=2e-3, weight_decay=0.05, warmup=0.1,
                       hue_invariance=0.0, colour_kept=0.0, seed=0,
                       task='shape_tasks.source_samples v2')
CACHE_ENV = 'MMSEG_PROMPT_CACHE'
NUM_SOURCE_CLASSES = len(SOURCE_SHAPES) + 1
GREY_AXIS = torch.ones(3) / math.sqrt(3)


def default_cache_dir() -> Path:
    """``$MMSEG_PROMPT_CACHE/trunks`` if set, else ``~/.cache/mmseg_prompt/trunks``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'mmseg_prompt'
    return Path(root) / 'trunks'


def build_pretraining_model() -> nn.Module:
    """``TINY_TRUNK`` with a linear classifier applied to every token (``global_pool=''``)."""
    return timm.create_model(TINY_TRUNK['model_name'], img_size=TINY_TRUNK['img_size'],
                             num_classes=NUM_SOURCE_CLASSES, global_pool='',
                             **TINY_TRUNK['model_kwargs'])


def cpu_capability() -> str:
    """The CPU kernel set torch runs here (``ATEN_CPU_CAPABILITY`` or the machine's best)."""
    return torch.backends.cpu.get_cpu_capability()


def rotate_hue(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotate the colours of x (B, 3, H, W), normalised RGB in [-1, 1], by theta (B,) radians
    about the grey axis k = (1, 1, 1) / sqrt(3) (a hue shift that keeps grey and brightness):
    ``y = R(theta) (x + 1) - 1`` with Rodrigues' ``R = cos I + sin [k]_x + (1 - cos) k k^T``,
    clipped to [-1, 1]."""
    k = GREY_AXIS.to(x)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]).to(x) * k[0]
    c, s = theta.cos()[:, None, None], theta.sin()[:, None, None]
    rot = c * torch.eye(3).to(x) + s * cross + (1 - c) * torch.outer(k, k)
    return (torch.einsum('bij,bjhw->bihw', rot, x + 1) - 1).clamp(-1, 1)


def normalise(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float, ``(x - 127.5) / 127.5``."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 127.5


def patch_labels(labels: np.ndarray, patch: int) -> torch.Tensor:
    """(N, H, W) pixel labels -> (N, H/p * W/p) majority label of each p x p patch, row-major:
    DA-VPT's ``models.utils.patch_labels`` on square patches, flattened. The source task has no
    ignore label and H, W are multiples of p, so no patch is padded or left out; a tie goes to
    the smaller label (torch's mode on the CPU, where the pretraining runs)."""
    return grid_patch_labels(torch.from_numpy(labels).long(), (patch, patch)).flatten(1)


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


def pretraining_loss(model: nn.Module, colour_map: nn.Module, images: np.ndarray,
                     labels: np.ndarray, recipe: dict) -> torch.Tensor:
    """The pretraining objective of the module docstring on one batch: images (B, H, W, 3) uint8
    and pixel labels (B, H, W); with ``hue_invariance``, each image enters with a hue-rotated
    copy."""
    x = normalise(images)
    b = x.shape[0]
    target = patch_labels(labels, model.patch_embed.patch_size[0])
    if recipe['hue_invariance']:
        x = torch.cat([x, rotate_hue(x, torch.rand(b) * 2 * math.pi)])
        target = target.repeat(2, 1)
    last = len(model.blocks) - 1
    final, ((before_last, _), (tokens, _)) = model.forward_intermediates(
        x, indices=[last - 1, last], norm=False, output_fmt='NLC', return_prefix_tokens=True)
    logits = model.forward_head(final)[:, model.num_prefix_tokens:]
    loss = F.cross_entropy(logits.reshape(-1, NUM_SOURCE_CLASSES), target.reshape(-1))
    if recipe['hue_invariance']:
        spread = (tokens - tokens.mean((0, 1), keepdim=True)).pow(2).sum(-1).mean()
        shift = (tokens[:b] - tokens[b:]).pow(2).sum(-1).mean()
        loss = loss + recipe['hue_invariance'] * shift / spread
    if recipe['colour_kept']:
        colour = F.avg_pool2d(x, model.patch_embed.patch_size).flatten(2).transpose(1, 2)
        loss = loss + recipe['colour_kept'] * F.mse_loss(colour_map(before_last), colour)
    return loss


def pretrain_tiny_trunk(recipe: Optional[dict] = None,
                        log: Callable[[str], None] = print) -> Tuple[nn.Module, Dict[str, float]]:
    """Pretrain ``build_pretraining_model()`` with ``recipe`` (default ``PRETRAIN_RECIPE``) and
    return (model, held-out patch accuracy) measured on 256 images of another seed."""
    recipe = {**PRETRAIN_RECIPE, **(recipe or {})}
    torch.manual_seed(recipe['seed'])
    rng = np.random.default_rng([recipe['seed'], 0])
    model = build_pretraining_model()
    colour_map = nn.Linear(model.embed_dim, 3)  # A of the colour term, dropped afterwards
    params = list(model.parameters()) + list(colour_map.parameters())
    opt = torch.optim.AdamW(params, lr=recipe['lr'], weight_decay=recipe['weight_decay'])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe['lr'], total_steps=recipe['steps'], pct_start=recipe['warmup'])
    held_out = source_samples(np.random.default_rng([recipe['seed'], 1]), 256)
    start = time.time()
    steps = recipe['steps']
    for step in range(1, steps + 1):
        model.train()
        images, labels = source_samples(rng, recipe['batch_size'])
        loss = pretraining_loss(model, colour_map, images, labels, recipe)
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


def recipe_key(recipe: dict, numerics: dict) -> str:
    """A short hash of the trunk spec, the pretraining recipe and the process's numerics (kernel
    sets, threads, determinism, library builds: ``numerics_record()``), naming the cached file:
    each makes its own trunk (docs/advanced_guides/pinned_numerics.md)."""
    text = json.dumps(dict(trunk=TINY_TRUNK, recipe=recipe, timm=timm.__version__,
                           numerics=numerics), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_sha256(path: Union[str, Path]) -> str:
    """The hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cached_tiny_trunk(cache_dir: Optional[Union[str, Path]] = None,
                      recipe: Optional[dict] = None,
                      log: Callable[[str], None] = print,
                      force: bool = False) -> Tuple[Path, dict]:
    """The trunk file of ``recipe`` in ``cache_dir`` (default ``default_cache_dir()``), made by
    ``pretrain_tiny_trunk`` the first time (or with ``force``) and reused afterwards (the log says
    which). Returns (path, info): info holds the recipe, the held-out accuracy, the CPU kernel set
    (``cpu_capability``), the process's ``numerics`` record (docs/advanced_guides/
    pinned_numerics.md), the file's sha256 and the pretraining time."""
    recipe = {**PRETRAIN_RECIPE, **(recipe or {})}
    numerics = numerics_record()
    capability = numerics['cpu_capability']
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    stem = f'tiny_vit_shapes_{recipe_key(recipe, numerics)}'
    path, info_path = cache_dir / f'{stem}.pth', cache_dir / f'{stem}.json'
    if path.is_file() and info_path.is_file() and not force:
        info = json.loads(info_path.read_text())
        log(f'reusing the pretrained tiny trunk {path} (seed {recipe["seed"]}, {capability} '
            f'kernels; held-out patch accuracy {info["accuracy"]["all"]:.3f}, shape patches '
            f'{info["accuracy"]["shapes"]:.3f}; delete it to pretrain again)')
        return path, info
    cache_dir.mkdir(parents=True, exist_ok=True)
    extra = (f', hue invariance {recipe["hue_invariance"]}' if recipe['hue_invariance'] else '') \
        + (f', colour kept {recipe["colour_kept"]}' if recipe['colour_kept'] else '')
    log(f'pretraining the tiny trunk ({recipe["steps"]} steps of per-patch shape '
        f'segmentation, batch {recipe["batch_size"]}{extra}, seed {recipe["seed"]}, '
        f'{capability} kernels); it is cached in {cache_dir}')
    start = time.time()
    model, accuracy = pretrain_tiny_trunk(recipe, log)
    seconds = time.time() - start
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith('head.')}
    write_atomically(path, lambda f: torch.save(trunk, f))
    info = dict(recipe=recipe, trunk=TINY_TRUNK, accuracy=accuracy, cpu_capability=capability,
                torch=torch.__version__, sha256=file_sha256(path), seconds=round(seconds, 1),
                threads=torch.get_num_threads(), numerics=numerics)
    write_atomically(info_path, lambda f: f.write(json.dumps(info, indent=1).encode()))
    log(f'pretrained in {seconds:.0f} s: held-out patch accuracy {accuracy["all"]:.3f} (shape '
        f'patches {accuracy["shapes"]:.3f}, chance {1 / NUM_SOURCE_CLASSES:.3f}); saved {path}')
    return path, info
