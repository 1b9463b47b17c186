"""BNLinearHead, the DINOv2/DINOv3 linear probe: conv_seg(BN(Dropout2d(x))), against the same
computation written out by hand."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401


def build(**kwargs):
    cfg = dict(type='BNLinearHead', in_channels=4, in_index=0, channels=4, num_classes=3,
               dropout_ratio=0.0, norm_cfg=dict(type='BN', requires_grad=True))
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def by_hand(x, head, batch_stats):
    """The BatchNorm (eps 1e-5) and the 1x1 convolution, one pixel at a time."""
    bn, conv = head.bn, head.conv_seg
    if batch_stats:  # training: the batch's mean and biased variance over (N, H, W)
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
    else:
        mean, var = bn.running_mean, bn.running_var
    w, b = conv.weight[:, :, 0, 0], conv.bias  # (classes, channels)
    out = torch.empty(x.shape[0], w.shape[0], *x.shape[2:])
    for n in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                v = (x[n, :, i, j] - mean) / torch.sqrt(var + 1e-5) * bn.weight + bn.bias
                for k in range(w.shape[0]):
                    out[n, k, i, j] = (w[k] * v).sum() + b[k]
    return out


def randomise(head):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in (head.bn.weight, head.bn.bias, head.conv_seg.weight, head.conv_seg.bias):
            t.copy_(torch.randn(t.shape, generator=g))
        head.bn.running_mean.copy_(torch.randn(4, generator=g))
        head.bn.running_var.copy_(torch.rand(4, generator=g) + 0.5)


def test_eval_and_train_equal_the_hand_computation():
    head = build()
    randomise(head)
    x = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    head.eval()
    with torch.no_grad():
        assert torch.allclose(head([x]), by_hand(x, head, batch_stats=False), atol=1e-5)
        head.train()
        assert torch.allclose(head([x]), by_hand(x, head, batch_stats=True), atol=1e-5)


def test_dropout_comes_before_the_norm_as_in_dinov3():
    """With dropout, training: the dropped-out features (whole channels of a sample zeroed, the
    rest scaled by 1 / (1 - p)) are what the BatchNorm normalises."""
    head = build(dropout_ratio=0.5).train()
    randomise(head)
    x = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    out = head([x])
    torch.manual_seed(7)  # the same draw as nn.Dropout2d's
    kept = F.dropout2d(torch.ones_like(x), 0.5, training=True)
    assert (kept == 0).any() and (kept == 2).any()
    with torch.no_grad():
        assert torch.allclose(out, by_hand(x * kept, head, batch_stats=True), atol=1e-5)


def test_classifier_init_and_parameters():
    """conv_seg normal(0, 0.01) with bias 0 (DINOv2's and DINOv3's init); the parameters are the
    BatchNorm's weight and bias and the classifier's: 2 C + K C + K."""
    head = build(in_channels=1024, channels=1024, num_classes=150)
    w = head.conv_seg.weight
    assert abs(w.std().item() - 0.01) < 0.001 and head.conv_seg.bias.abs().max() == 0
    assert sum(p.numel() for p in head.parameters()) == 2 * 1024 + 1024 * 150 + 150


def test_resize_concat_of_several_layers():
    """DINOv2's "+ms" form: several maps, resized to the first's size and concatenated."""
    head = build(in_channels=[2, 2], in_index=[0, 1], channels=4,
                 input_transform='resize_concat').eval()
    randomise(head)
    a, b = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)
    up = F.interpolate(b, size=(4, 4), mode='bilinear', align_corners=False)
    with torch.no_grad():
        assert torch.allclose(head([a, b]), by_hand(torch.cat([a, up], 1), head, False),
                              atol=1e-5)


def test_refuses_a_width_that_is_not_the_features():
    with pytest.raises(ValueError, match='channels=8 must equal the input channels'):
        build(channels=8)
    with pytest.raises(ValueError, match='needs norm_cfg'):
        build(norm_cfg=None)
