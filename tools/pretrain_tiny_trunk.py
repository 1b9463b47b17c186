"""Pretrain the comparison's tiny ViT trunk on synthetic shape segmentation and cache it.

Prints the held-out patch accuracy and the path of the trunk file (an ordinary timm state dict,
``model.backbone.pretrained`` of configs/example/comparison). A second run with the same recipe
reuses the cached file and says so. See docs/comparison.md.

Usage: python tools/pretrain_tiny_trunk.py [--cache-dir DIR] [--steps N] [--seed S] [--force]
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
    p.add_argument('--seed', type=int, default=PRETRAIN_RECIPE['seed'])
    p.add_argument('--force', action='store_true', help='pretrain again even if cached')
    args = p.parse_args(argv)
    recipe = dict(steps=args.steps, seed=args.seed)
    path, _ = cached_tiny_trunk(args.cache_dir, recipe, force=args.force)
    print(path)
    return path


if __name__ == '__main__':
    main()
