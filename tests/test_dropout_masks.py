"""Every block's dropout masks in one draw: the masks of one RandomBitsDropout call per tensor
(CPU), and the per-sample prompts and outputs of VPT-Deep and CVPT with dropout on equal a hand
computation that drops each block's tensors one call at a time, as the methods' code does."""
import pytest
import torch

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models.utils import RandomBitsDropout
from mmseg_prompt.models.utils.dropout_masks import dropout_masks

from test_prompt_backbones import build, cvpt_by_hand, timm_reference, vpt_deep_by_hand


def test_masks_equal_one_random_bits_dropout_call_per_tensor_in_order():
    shapes = [(2, 3, 5), (7,), (2, 4, 6), (1, 1, 3)]  # numels not all multiples of 4
    rates = [0.1, 0.3, 0.1, 0.5]
    torch.manual_seed(3)
    got = dropout_masks(shapes, rates, torch.device('cpu'))
    after = torch.rand(4)  # the generator is where the per-tensor calls leave it
    torch.manual_seed(3)
    expected = [RandomBitsDropout(p).train()(torch.ones(s)) for s, p in zip(shapes, rates)]
    assert torch.equal(after, torch.rand(4))
    for g, e, s in zip(got, expected, shapes):
        assert g.shape == s and g.dtype == torch.float32
        assert torch.equal(g, e)
    with pytest.raises(ValueError, match='2 shapes but 1 dropout rates'):
        dropout_masks([(2,), (3,)], [0.1], torch.device('cpu'))
    assert dropout_masks([], [], torch.device('cpu')) == []


def test_masks_drawn_while_compiling_keep_one_minus_p_at_the_scale():
    """Inside torch.compile the draw is torch.rand (no graph break): keep rate 1 - p and the
    kept entries 1 / (1 - p)."""
    def draw():
        return dropout_masks([(400, 250), (100,)], [0.25, 0.5], torch.device('cpu'))
    torch.manual_seed(0)
    big, small = torch.compile(draw, backend='eager', fullgraph=True)()
    for mask, p in ((big, 0.25), (small, 0.5)):
        kept = mask[mask != 0]
        assert 0 < kept.numel() < mask.numel()
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    assert abs((big > 0).float().mean().item() - 0.75) < 0.01


def _step(fn, params):
    """Outputs and prompt gradients of one forward and backward, from seed 5."""
    for p in params:
        p.grad = None
    torch.manual_seed(5)
    out = fn()
    sum((o ** 2).mean() for o in out).backward()
    return [o.detach() for o in out] + [p.grad.clone() for p in params]


def _backbone_and_hand(path, by_hand, x, **cfg):
    """The backbone's step and the hand computation's, from the same prompts and seed."""
    bb = build(pretrained=str(path), **cfg).train()
    params = list(bb.prompts.tokens.values())
    with torch.no_grad():  # prompts as large as trained ones, so every dropped entry counts
        for p in params:
            p.normal_()
    return bb, _step(lambda: bb(x), params), _step(lambda: by_hand(bb), params)


def test_vpt_deep_prompt_dropout_equals_one_dropout_call_per_block(tiny_trunk_file):
    path, _ = tiny_trunk_file
    ref = timm_reference(path)
    x = torch.randn(2, 3, 48, 64)
    bb, got, expected = _backbone_and_hand(
        path, lambda bb: vpt_deep_by_hand(ref, bb, x, RandomBitsDropout(0.3).train()), x,
        type='VPTDeepViT', num_prompts=[3, 5, 0], prompt_dropout=0.3)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-6)
    torch.manual_seed(6)  # another draw drops other entries
    assert (bb(x)[0] - got[0]).abs().max() > 1e-3


@pytest.mark.parametrize('fold', ['always', 'never'])
def test_cvpt_prompt_and_output_dropout_equal_one_dropout_call_each_per_block(tiny_trunk_file,
                                                                               fold):
    """Per prompted block: its prompts' mask, then its cross-attention output's."""
    path, _ = tiny_trunk_file
    ref = timm_reference(path)
    x = torch.randn(2, 3, 64, 80)
    _, got, expected = _backbone_and_hand(
        path, lambda bb: cvpt_by_hand(ref, bb, x, RandomBitsDropout(0.2).train(),
                                      RandomBitsDropout(0.1).train()), x,
        type='CVPTViT', num_prompts=[4, 0, 6], prompt_dropout=0.2, cross_proj_drop=0.1,
        cross_attn_fold=fold)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=2e-5, rtol=2e-5)


def test_prompts_before_begin_forward_are_refused_and_after_it_served():
    bb = build('VPTDeepViT', num_prompts=2, prompt_dropout=0.1).train()
    with pytest.raises(RuntimeError, match='before begin_forward made them'):
        bb.prompts.for_batch(0, 2)
    bb.prompts.begin_forward(torch.zeros(2, 5, 64))
    assert bb.prompts.for_batch(0, 2).shape == (2, 2, 64)
    bb.eval()  # no dropout: the shared (M, D) prompts, nothing per forward
    assert bb.prompts.for_batch(0, 2) is bb.prompts.get(0)
