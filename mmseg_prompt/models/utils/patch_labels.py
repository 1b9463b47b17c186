"""Dense labels at the patch grid: DA-VPT's adaptation to segmentation (docs/methods.md)."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def patch_labels(seg: torch.Tensor, patch_size: Tuple[int, int],
                 ignore_index: int = 255) -> torch.Tensor:
    """Majority label of each patch.

    seg: (B, H, W) label map, padded right/bottom with ``ignore_index`` to a multiple of the
    patch size (as the backbone pads the image). Returns (B, ceil(H/ph), ceil(W/pw)): the most
    frequent value of each patch, ``ignore_index`` where that is the ignore index (a patch
    dominated by unlabelled pixels is left out).
    """
    ph, pw = patch_size
    B, H, W = seg.shape
    seg = F.pad(seg, (0, (-W) % pw, 0, (-H) % ph), value=ignore_index)
    h, w = seg.shape[1] // ph, seg.shape[2] // pw
    patches = seg.reshape(B, h, ph, w, pw).permute(0, 1, 3, 2, 4).reshape(B, h, w, ph * pw)
    return patches.mode(dim=-1).values


def sample_per_class(labels: torch.Tensor, max_per_class: int, ignore_index: int = 255,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Indices of at most ``max_per_class`` randomly chosen entries of each class in ``labels``
    (N,), ignore index excluded; returns a 1-D long tensor, grouped by class."""
    chosen = []
    for c in labels.unique().tolist():
        if c == ignore_index:
            continue
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() > max_per_class:
            idx = idx[torch.randperm(idx.numel(), generator=generator,
                                     device=idx.device)[:max_per_class]]
        chosen.append(idx)
    if not chosen:
        return labels.new_zeros(0, dtype=torch.long)
    return torch.cat(chosen)
