"""Pretrain the comparison's tiny ViT trunk on synthetic shape segmentation and cache it.

Prints the held-out patch accuracy and, on its last line, the path of the trunk file (an ordinary
timm state dict, ``model.backbone.pretrained`` of configs/example/comparison); beside it,
``<same stem>.json`` holds the recipe, the accuracy, the CPU kernel set and the file's sha256. A
second run with the same recipe and kernels reuses the cached file and says so. Set
``ATEN_CPU_CAPABILITY`` (e.g. ``avx2``) to pretrain with another kernel set; the comparison tool
runs it under the pinned numerics, with ``--deterministic``
(docs/advanced_guides/pinned_numerics.md). See docs/comparison.md.

Usage: python tools/pretrain_tiny_trunk.py [--cache-dir DIR] [--steps N] [--batch-size B]
       [--seed S] [--hue-invariance W] [--colour-kept W] [--deterministic] [--force]
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> Path:
    from mmseg_prompt.testing.tiny_trunk import (PRETRAIN_RECIPE, cached_tiny_trunk,
                                                 default_cache_dir)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cache-dir', default=None,
                   help=f'default: {default_cache_dir()} ($MMSEG_PROMPT_CACHE/trunks if set)')
    p.add_argument('--steps', type=int, default=PRETRAIN_RECIPE['steps'])
    p.add_argument('--batch-size', type=int, default=PRETRAIN_RECIPE['batch_size'])
    p.add_argument('--seed', type=int, default=PRETRAIN_RECIPE['seed'])
    p.add_argument('--hue-invariance', type=float, default=PRETRAIN_RECIPE['hue_invariance'],
                   help='weight of the last block\'s hue-invariance term (0: off; '
                        'docs/comparison.md, "Hue-invariant trunks")')
    p.add_argument('--colour-kept', type=float, default=PRETRAIN_RECIPE['colour_kept'],
                   help='weight of the colour regression at the last block\'s input (0: off)')
    p.add_argument('--deterministic', action='store_true',
                   help='torch.use_deterministic_algorithms(True) while pretraining (part of '
                        'the cache key)')
    p.add_argument('--force', action='store_true', help='pretrain again even if cached')
    args = p.parse_args(argv)
    if args.deterministic:
        import torch
        torch.use_deterministic_algorithms(True)
    recipe = dict(steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                  hue_invariance=args.hue_invariance, colour_kept=args.colour_kept)
    path, _ = cached_tiny_trunk(args.cache_dir, recipe, force=args.force)
    print(path, flush=True)
    return path


if __name__ == '__main__':
    main()
