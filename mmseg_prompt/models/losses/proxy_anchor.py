"""DA-VPT's metric-learning loss (Proxy-Anchor form, as DA-VPT's code implements it)."""
import torch
import torch.nn.functional as F


def proxy_anchor_loss(features: torch.Tensor, proxies: torch.Tensor, positives: torch.Tensor,
                      scale: float = 5.0, alpha: float = 32.0, delta: float = 0.1,
                      positive_mean: str = 'paper') -> torch.Tensor:
    """L_ML between N features and M proxies (docs/methods.md, DA-VPT).

    With s_ik = scale * cos(x_i, p_k):

        L = 1/|K+| sum_k log(1 + sum_{i in pos(k)} exp(-alpha (s_ik - delta)))
          + 1/M    sum_k log(1 + sum_{i in neg(k)} exp( alpha (s_ik + delta)))

    Args:
        features: (N, D).
        proxies: (M, D).
        positives: (N, M) bool, True where feature i belongs to proxy k (one or more per row).
        positive_mean: 'paper' divides the positive part by |K+|, the number of proxies with at
            least one positive (DA-VPT eq. 4); 'code' divides by M, as DA-VPT's code does.

    Returns a scalar. Sums of exponentials go through logsumexp, so alpha * scale = 160 cannot
    overflow.
    """
    if positive_mean not in ('paper', 'code'):
        raise ValueError(f"positive_mean must be 'paper' or 'code', got {positive_mean!r}")
    if positives.shape != (features.shape[0], proxies.shape[0]):
        raise ValueError(f'positives must be (N, M) = ({features.shape[0]}, {proxies.shape[0]}),'
                         f' got {tuple(positives.shape)}')
    s = scale * F.normalize(features, dim=-1) @ F.normalize(proxies, dim=-1).t()  # (N, M)
    pos = _log1p_sum_exp(-alpha * (s - delta), positives)
    neg = _log1p_sum_exp(alpha * (s + delta), ~positives)
    m = proxies.shape[0]
    with_pos = int(positives.any(0).sum()) if positive_mean == 'paper' else m
    return pos.sum() / max(with_pos, 1) + neg.sum() / m


def _log1p_sum_exp(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per column k: log(1 + sum_{i: mask_ik} exp(z_ik)), (N, M) -> (M,), computed stably."""
    z = z.masked_fill(~mask, float('-inf'))
    zero = z.new_zeros(1, z.shape[1])
    return torch.logsumexp(torch.cat([zero, z], dim=0), dim=0)
