"""CVPTViT and VPTDeepViT against timm's forward and a hand (einsum) computation of the papers'
formulas, on tiny trunks."""
import math

import pytest
import timm
import torch
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models.backbones import CVPTViT, PromptCrossAttention, VPTDeepViT, prompt_counts
from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME

METHODS = ['CVPTViT', 'VPTDeepViT']


def build(type, **kw):
    cfg = dict(type=type, model_name=TINY_NAME, img_size=224, model_kwargs=TINY_KWARGS,
               out_indices=(0, 1, 2))
    cfg.update(kw)
    return MODELS.build(cfg)


def timm_reference(path, device='cpu'):
    ref = timm.create_model(TINY_NAME, num_classes=0, img_size=224, dynamic_img_size=True,
                            dynamic_img_pad=True, **TINY_KWARGS)
    ref.load_state_dict(torch.load(path))
    return ref.eval().to(device)


def cross_attention_by_hand(x, P, attn):
    """docs/methods.md's CrossAttn(x, P) written out with einsum from the block's weights."""
    D = x.shape[-1]
    H = attn.num_heads
    d = D // H
    W, b = attn.qkv.weight.detach(), attn.qkv.bias.detach()
    Wq, Wk, Wv = W[:D], W[D:2 * D], W[2 * D:]
    bq, bk, bv = b[:D], b[D:2 * D], b[2 * D:]
    if P.dim() == 2:
        P = P.expand(x.shape[0], -1, -1)
    Q = torch.einsum('bnc,oc->bno', x, Wq) + bq
    K = torch.einsum('bmc,oc->bmo', P, Wk) + bk
    V = torch.einsum('bmc,oc->bmo', P, Wv) + bv
    Q, K, V = (t.reshape(t.shape[0], t.shape[1], H, d) for t in (Q, K, V))
    A = torch.softmax(torch.einsum('bnhd,bmhd->bhnm', Q, K) / math.sqrt(d), dim=-1)
    heads = torch.einsum('bhnm,bmhd->bnhd', A, V).reshape(x.shape[0], x.shape[1], D)
    return torch.einsum('bnc,oc->bno', heads, attn.proj.weight.detach()) + attn.proj.bias.detach()


def _feature_map(t, x, patch=16):
    """The patch tokens of t (B, 1 + N, D) as the backbone's (B, D, h, w) map of input x."""
    h, w = -(-x.shape[2] // patch), -(-x.shape[3] // patch)
    return t[:, 1:].reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2)


def vpt_deep_by_hand(ref, bb, x, drop=lambda p: p):
    """VPT-Deep written out over timm's blocks: [cls, drop(P_l), patches] into block l, the
    prompt outputs cut out after it. ``drop`` is the prompt dropout, one call per block."""
    t = ref.norm_pre(ref._pos_embed(ref.patch_embed(x)))
    out = []
    for i, blk in enumerate(ref.blocks):
        P = bb.prompts.get(i)
        m = 0 if P is None else P.shape[0]
        if m:
            t = torch.cat([t[:, :1], drop(P.expand(x.shape[0], -1, -1)), t[:, 1:]], 1)
        t = blk(t)
        t = torch.cat([t[:, :1], t[:, 1 + m:]], 1)
        out.append(_feature_map(t, x))
    return out


def cvpt_by_hand(ref, bb, x, drop_prompts=lambda p: p, drop_out=lambda o: o):
    """CVPT written out over timm's blocks: x + CrossAttn(x, drop_prompts(P_l)) (dropped by
    ``drop_out``) between self-attention and MLP; the two dropouts one call each per block."""
    t = ref.norm_pre(ref._pos_embed(ref.patch_embed(x)))
    out = []
    for i, blk in enumerate(ref.blocks):
        t = t + blk.attn(blk.norm1(t))
        P = bb.prompts.get(i)
        if P is not None:
            P = drop_prompts(P.expand(x.shape[0], -1, -1))
            t = t + drop_out(cross_attention_by_hand(t, P, blk.attn))
        t = t + blk.mlp(blk.norm2(t))
        out.append(_feature_map(t, x))
    return out


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_zero_prompts_equal_timm_forward_intermediates(tiny_trunk_file, method, mode, device):
    path, _ = tiny_trunk_file
    ref = timm_reference(path, device)
    bb = build(method, pretrained=str(path), num_prompts=0).train(mode == 'train').to(device)
    assert not list(bb.prompts.tokens)
    for hw in [(224, 224), (234, 345)]:
        x = torch.randn(2, 3, *hw, device=device)
        with torch.no_grad():
            expected = ref.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
            got = bb(x)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


@pytest.mark.parametrize('fold', ['never', 'always'])
@pytest.mark.parametrize('num_prompts', [7, 20])  # folded rows (prompt, head) / (head, prompt)
def test_cross_attention_equals_einsum_formula(tiny_trunk_file, fold, num_prompts):
    path, ref = tiny_trunk_file
    attn = ref.blocks[1].attn
    torch.manual_seed(1)
    x = torch.randn(2, 17, 64)
    cross = PromptCrossAttention(fold=fold).eval()
    for P in (torch.randn(num_prompts, 64), torch.randn(2, num_prompts, 64)):  # shared, per sample
        with torch.no_grad():
            got = cross(x, P, attn)
        torch.testing.assert_close(got, cross_attention_by_hand(x, P, attn), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('shared', [True, False])
@pytest.mark.parametrize('num_prompts', [5, 20])  # folded rows (prompt, head) / (head, prompt)
def test_folded_and_plain_forms_agree_in_forward_and_prompt_gradients(tiny_trunk_file, shared,
                                                                       num_prompts, device):
    _, ref = tiny_trunk_file
    attn = ref.blocks[2].attn.double().to(device)
    torch.manual_seed(2)
    f64 = dict(dtype=torch.float64, device=device)
    x = torch.randn(3, 21, 64, **f64)
    P = torch.randn(num_prompts, 64, **f64) if shared else torch.randn(3, num_prompts, 64, **f64)
    results = {}
    for fold in ('never', 'always'):
        p = P.clone().requires_grad_()
        out = PromptCrossAttention(fold=fold)(x, p, attn)
        w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device)
        (out * w.view_as(out)).sum().backward()
        results[fold] = (out.detach(), p.grad)
    torch.testing.assert_close(results['always'][0], results['never'][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results['always'][1], results['never'][1], rtol=1e-10, atol=1e-12)


def test_fold_is_chosen_per_device_on_a_cpu_when_heads_times_prompts_is_below_the_width(
        tiny_trunk_file):
    """'auto': the folded form on a CPU when H M < D (arithmetic), the plain one on an
    accelerator (launches); 'always' and 'never' on every device."""
    _, ref = tiny_trunk_file
    attn = ref.blocks[0].attn  # 2 heads, width 64
    cross = PromptCrossAttention(fold='auto')
    assert cross.use_fold(attn, 31, 64, 'cpu') and not cross.use_fold(attn, 32, 64, 'cpu')
    assert not cross.use_fold(attn, 1, 64, 'cuda')
    assert PromptCrossAttention(fold='always').use_fold(attn, 200, 64, 'cuda')
    assert not PromptCrossAttention(fold='never').use_fold(attn, 1, 64, 'cpu')
    with pytest.raises(ValueError, match='fold'):
        PromptCrossAttention(fold='sometimes')


def test_cvpt_backbone_equals_hand_computation(tiny_trunk_file, device):
    """The whole CVPT forward: self-attention, then x + CrossAttn(x, P_l), then the MLP."""
    path, _ = tiny_trunk_file
    ref = timm_reference(path, device)
    bb = build('CVPTViT', pretrained=str(path), num_prompts=[4, 0, 6]).eval().to(device)
    with torch.no_grad():  # prompts as large as trained ones, so every term matters
        for p in bb.prompts.tokens.values():
            p.normal_()
    x = torch.randn(2, 3, 64, 80, device=device)
    with torch.no_grad():
        got, expected = bb(x), cvpt_by_hand(ref, bb, x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    # and the prompts do contribute
    with torch.no_grad():
        plain = ref.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
    assert (got[0] - plain[0]).abs().max() > 1e-3


@pytest.mark.parametrize('counts', [[3, 5, 0], [4, 4, 4]])  # prompts cut out and put in, or
def test_vpt_deep_equals_hand_computation(tiny_trunk_file, device, counts):  # overwritten
    """[cls, P_l, patches] into block l, prompt outputs dropped, the next block's prompts put in."""
    path, _ = tiny_trunk_file
    ref = timm_reference(path, device)
    bb = build('VPTDeepViT', pretrained=str(path), num_prompts=counts).eval().to(device)
    with torch.no_grad():  # prompts as large as trained ones, so every term matters
        for p in bb.prompts.tokens.values():
            p.normal_()
    x = torch.randn(2, 3, 48, 64, device=device)
    with torch.no_grad():
        got, expected = bb(x), vpt_deep_by_hand(ref, bb, x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        plain = ref.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
    assert (got[0] - plain[0]).abs().max() > 1e-3


def test_cross_attention_uses_the_blocks_own_tensors(tiny_trunk_file):
    """Changing a block's self-attention weights changes its cross-attention: shared, not copied."""
    path, _ = tiny_trunk_file
    bb = build('CVPTViT', pretrained=str(path), num_prompts=4).eval()
    attn = bb.trunk.blocks[2].attn
    x = torch.randn(1, 10, 64)
    P = bb.prompts.get(2) * 20  # trained prompts are larger than at init
    with torch.no_grad():
        before = bb.prompts.cross_attn(x, P, attn)
        for part in ('k', 'v', 'q'):
            sl = {'q': slice(0, 64), 'k': slice(64, 128), 'v': slice(128, 192)}[part]
            attn.qkv.weight[sl] += torch.randn_like(attn.qkv.weight[sl])
            after = bb.prompts.cross_attn(x, P, attn)
            assert (after - before).abs().max() > 1e-3, f'changing W_{part} did not change it'
            before = after
        attn.proj.weight.mul_(2.0)
        assert (bb.prompts.cross_attn(x, P, attn) - before).abs().max() > 1e-3
    # nothing beyond the trunk, the prompts and the provenance record is stored: no copied
    # projection weights
    extra = [k for k in bb.state_dict()
             if not k.startswith(('trunk.', 'prompts.tokens.')) and k != 'provenance']
    assert extra == []


@pytest.mark.parametrize('method', METHODS)
def test_only_prompts_are_trainable_and_counted(method):
    counts = [3, 0, 7]
    bb = build(method, num_prompts=counts).train()
    trainable = {n: p for n, p in bb.named_parameters() if p.requires_grad}
    assert set(trainable) == {'prompts.tokens.0', 'prompts.tokens.2'}
    assert sum(p.numel() for p in trainable.values()) == sum(counts) * 64
    assert not bb.trunk.training and bb.prompts.training


@pytest.mark.parametrize('method', METHODS)
def test_one_step_changes_every_blocks_prompts_and_no_trunk_tensor(tiny_trunk_file, method):
    path, _ = tiny_trunk_file
    bb = build(method, pretrained=str(path), num_prompts=[2, 3, 4]).train()
    trunk_before = {k: v.clone() for k, v in bb.trunk.state_dict().items()}
    prompts_before = {k: v.detach().clone() for k, v in bb.prompts.tokens.items()}
    opt = torch.optim.SGD([p for p in bb.parameters() if p.requires_grad], lr=1.0)
    outs = bb(torch.randn(2, 3, 64, 64))
    sum((o ** 2).mean() for o in outs).backward()
    opt.step()
    for k, v in bb.prompts.tokens.items():
        assert not torch.equal(v, prompts_before[k]), f'prompts of block {k} did not change'
    for k, v in bb.trunk.state_dict().items():
        assert torch.equal(v, trunk_before[k]), f'trunk tensor {k} changed'
        assert getattr(v, 'grad', None) is None


def test_prompt_init_follows_each_method():
    cvpt = build('CVPTViT', num_prompts=[10, 20, 0])
    vpt = build('VPTDeepViT', num_prompts=[10, 20, 0])
    for i, m in [(0, 10), (1, 20)]:
        bound = math.sqrt(6 / (64 * (m + 3)))  # xavier over (depth, M, D)
        p = cvpt.prompts.get(i)
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound
    bound = math.sqrt(6 / (3 * 16 * 16 + 64))  # VPT: sqrt(6 / (3 p^2 + D))
    p = vpt.prompts.get(1)
    assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound


@pytest.mark.parametrize('method', METHODS)
def test_prompt_dropout_is_per_sample_in_training_only(method):
    bb = build(method, num_prompts=8, prompt_dropout=0.5).train()
    x = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)
    torch.manual_seed(0)
    outs = bb(x)
    assert (outs[-1][0] - outs[-1][1]).abs().max() > 1e-4  # two samples, two dropout masks
    bb.eval()
    a, b = bb(x)[-1], bb(x)[-1]
    torch.testing.assert_close(a[0], a[1])
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize('method', METHODS)
def test_any_input_size_and_cls_token_output(method):
    bb = build(method, num_prompts=5, output_cls_token=True).eval()
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 234, 345))
    assert all(o[0].shape == (1, 64, 15, 22) and o[1].shape == (1, 64) for o in outs)


def test_bad_prompt_counts_are_refused():
    with pytest.raises(ValueError, match='3 blocks'):
        prompt_counts([1, 2], 3)
    with pytest.raises(ValueError, match='>= 0'):
        prompt_counts([1, -2, 0], 3)
    with pytest.raises(TypeError):
        prompt_counts(True, 3)
    with pytest.raises(ValueError, match='prompt_dropout'):
        build('VPTDeepViT', prompt_dropout=1.0)


def test_cvpt_refuses_blocks_it_cannot_share_weights_with():
    from timm.models.vision_transformer import ParallelScalingBlock
    kw = dict(TINY_KWARGS, block_fn=ParallelScalingBlock)
    with pytest.raises(ValueError, match=r'block 0 .*num_prompts\[0\] = 0'):
        build('CVPTViT', model_kwargs=kw)


@pytest.mark.slow  # ViT-L models built on CPU
@pytest.mark.parametrize('cls', [CVPTViT, VPTDeepViT])
def test_vit_large_shapes_build_without_weights(cls):
    """The paper's ViT-L/16 (24 blocks, width 1024): parameter counts and a small forward."""
    bb = cls(num_prompts=10).eval()
    trunk = sum(p.numel() for p in bb.trunk.parameters())
    prompts = sum(p.numel() for p in bb.prompts.parameters())
    assert bb.depth == 24 and bb.embed_dim == 1024 and bb.out_indices == (7, 11, 15, 23)
    assert prompts == 24 * 10 * 1024
    assert 303_000_000 < trunk < 305_000_000  # ViT-L/16 at 512: 303.7M (pos-embed for 32x32)
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 48, 64))
    assert [o.shape for o in outs] == [(1, 1024, 3, 4)] * 4
