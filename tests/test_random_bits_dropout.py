"""RandomBitsDropout: nn.Dropout's distribution and scaling, from 16-bit random draws."""
import pytest
import torch

from mmseg_prompt.models.utils import RandomBitsDropout, random_bits_keep_mask


@pytest.mark.parametrize('p', [0.1, 0.5, 0.03])
def test_keep_rate_matches_the_quantised_probability_in_every_16_bit_lane(p):
    torch.manual_seed(0)
    n = 1 << 22
    keep = random_bits_keep_mask((n,), p)
    q = 1 - round(p * 65536) / 65536
    sigma = (q * (1 - q) / (n // 4)) ** 0.5
    # each int64 draw gives 4 lanes; a lane with a biased bit (e.g. a never-set sign bit)
    # would keep far more or fewer than q
    for lane in range(4):
        rate = keep[lane::4].double().mean().item()
        assert abs(rate - q) < 5 * sigma, (lane, rate, q)
    # neighbours are independent: both dropped at rate (1 - q)^2
    both = (~keep[:-1] & ~keep[1:]).double().mean().item()
    assert abs(both - (1 - q) ** 2) < 5 * ((1 - q) ** 2 / n) ** 0.5 * 2


def kept_scale(p: float, device: str) -> float:
    """1 / keep probability: quantised to 16 bits on CPU, F.dropout's 1 / (1 - p) elsewhere."""
    return 65536 / (65536 - round(p * 65536)) if device == 'cpu' else 1 / (1 - p)


def exactly(device: str) -> dict:
    """Bit-exact on CPU; within a few float32 ulps elsewhere (F.dropout's kernel may compute
    1 / (1 - p) in float32)."""
    return dict(rtol=0, atol=0) if device == 'cpu' else dict(rtol=1e-6, atol=0)


def test_training_output_is_zero_or_exactly_rescaled_and_unbiased(device):
    torch.manual_seed(1)
    drop = RandomBitsDropout(0.1).train()
    x = torch.rand(64, 1000, device=device) + 0.5
    out = drop(x)
    kept = out != 0
    scale = kept_scale(0.1, device)
    torch.testing.assert_close(out[kept], x[kept] * scale, **exactly(device))
    # E[out] = x: the mean ratio over 64000 elements is 1 within 5 sigma
    ratio = (out / x).mean().item()
    sigma = scale * (0.1 * 0.9 / x.numel()) ** 0.5
    assert abs(ratio - 1) < 5 * sigma


def test_gradient_uses_the_forward_mask_and_scale(device):
    torch.manual_seed(2)
    drop = RandomBitsDropout(0.3).train()
    x = torch.randn(8, 33, device=device, requires_grad=True)
    out = drop(x)
    g = torch.randn_like(out)
    out.backward(g)
    scale = kept_scale(0.3, device)
    expected = torch.where(out != 0, g * scale, torch.zeros_like(g))
    torch.testing.assert_close(x.grad, expected, **exactly(device))


def test_eval_and_zero_probability_are_the_identity_and_seeds_reproduce(device):
    x = torch.randn(4, 5, device=device)
    assert RandomBitsDropout(0.5).eval()(x) is x
    assert RandomBitsDropout(0.0).train()(x) is x
    drop = RandomBitsDropout(0.5).train()
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    assert torch.equal(a, b) and not torch.equal(a, drop(x))
    with pytest.raises(ValueError, match=r'\[0, 1\)'):
        RandomBitsDropout(1.0)
