"""Cosine k-means: DA-VPT's clustering of class means into prompts (docs/methods.md)."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def cosine_kmeans(x: torch.Tensor, k: int, init: Optional[torch.Tensor] = None,
                  max_iters: int = 20, tol: float = 1e-4,
                  generator: Optional[torch.Generator] = None
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cluster C vectors (C, D) into k clusters by cosine similarity.

    Assignment: highest cosine similarity to a centroid. Update: centroid = mean of its members
    (a cluster left empty keeps its centroid). Stops after ``max_iters`` or when no centroid
    moves by more than ``tol``. ``init`` (k, D) warm-starts from given centroids; otherwise k
    distinct rows of ``x`` are drawn with ``generator``.

    Returns (assignment (C,) long, centroids (k, D)).
    """
    if x.shape[0] < k and init is None:
        raise ValueError(f'cannot draw {k} initial centroids from {x.shape[0]} vectors; give init')
    if init is None:
        init = x[torch.randperm(x.shape[0], generator=generator)[:k]]
    centroids = init.clone().to(x.dtype)
    xn = F.normalize(x, dim=-1)
    for _ in range(max_iters):
        assign = (xn @ F.normalize(centroids, dim=-1).t()).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        shift = (new - centroids).norm(dim=-1).max()
        centroids = new
        if shift <= tol:
            break
    assign = (xn @ F.normalize(centroids, dim=-1).t()).argmax(dim=1)
    return assign, centroids


def farthest_first_init(x: torch.Tensor, k: int,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """k initial centroids from the rows of ``x`` (C, D), C >= k: one drawn at random, then
    repeatedly the row least similar (cosine) to all chosen so far. Deterministic given the
    generator; avoids starting two centroids inside one cluster. Returns (k, D)."""
    xn = F.normalize(x, dim=-1)
    first = int(torch.randint(x.shape[0], (1,), generator=generator))
    chosen = [first]
    best = xn @ xn[first]  # highest similarity of each row to a chosen centroid
    for _ in range(1, k):
        best[chosen] = float('inf')
        nxt = int(best.argmin())
        chosen.append(nxt)
        best = torch.maximum(best, xn @ xn[nxt])
    return x[chosen].clone()


def map_unseen(assign: torch.Tensor, seen: torch.Tensor, k: int) -> torch.Tensor:
    """Give every unseen class (``seen`` False) a cluster: each goes, in class order, to the
    cluster with the fewest classes so far, so that no class is left without a prompt.

    assign: (C,) clusters of all classes (entries of unseen classes are ignored); returns (C,).
    """
    out = assign.clone()
    sizes = torch.bincount(assign[seen], minlength=k)
    for c in torch.nonzero(~seen).flatten().tolist():
        j = int(sizes.argmin())
        out[c] = j
        sizes[j] += 1
    return out
