"""Eva trunks (DINOv3: RoPE, registers, LayerScale as gamma, separate q/v biases, SwiGLU) under
FrozenViT and every part, against timm's own Eva forward and hand computations from timm's
modules."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models.backbones.block_steps import run_block_steps
from mmseg_prompt.models.backbones.trunk_families import EVA, rope_with_prompts
from mmseg_prompt.testing import TINY_ROPE_KWARGS, TINY_ROPE_NAME

from conftest import randomised_rope_trunk as randomised_eva

PREFIX = 5  # DINOv3: the class token and 4 registers


def build(path=None, **cfg):
    torch.manual_seed(0)
    full = dict(type='FrozenViT', model_name=TINY_ROPE_NAME, img_size=64,
                model_kwargs=TINY_ROPE_KWARGS, out_indices=(0, 1, 2),
                pretrained=None if path is None else str(path))
    full.update(cfg)
    return MODELS.build(full)


def randomise(module, *names, scale=0.2):
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if p.requires_grad and any(k in n for k in names):
                p.normal_(0, scale)


@pytest.mark.parametrize('name, kwargs', [
    (TINY_ROPE_NAME, {}),
    ('vit_small_patch16_dinov3', {}),                                   # no q/k/v bias
    ('vit_small_patch16_dinov3', dict(swiglu_mlp=True, swiglu_align_to=8)),  # H+/7B's MLP
    ('vit_small_patch16_dinov3', dict(no_layer_scale=True)),
    (TINY_ROPE_NAME, dict(drop_path_rate=0.5, proj_drop_rate=0.2)),
    ('eva02_tiny_patch14_224', dict(embed_dim=64, num_heads=2, img_size=56)),  # EVA-02
])
def test_block_steps_equal_timm_eva_block_forward(name, kwargs):
    """With no branch, the step-by-step run is timm's EvaBlock.forward with the model's RoPE,
    bit for bit (train mode too, from the same random state)."""
    kwargs = dict(kwargs)
    no_layer_scale = kwargs.pop('no_layer_scale', False)
    model = randomised_eva(name, depth=2, **kwargs)
    for block in model.blocks if no_layer_scale else ():  # timm's create_model drops None
        block.gamma_1 = block.gamma_2 = None             # (init_values=None): LayerScale off
    tokens, grid, rope = EVA.embed(model, torch.randn(2, 3, 48, 80))
    assert rope is not None and grid == ((3, 5) if '16' in name else (4, 6))
    for train in (False, True):
        model.train(train)
        for block in model.blocks:
            with torch.random.fork_rng():
                torch.manual_seed(3)
                expected = block(tokens, rope=rope)
            with torch.random.fork_rng():
                torch.manual_seed(3)
                out, steps = run_block_steps(block, tokens, family=EVA, rope=rope)
            assert torch.equal(out, expected)
            assert torch.equal(steps.out, out) and torch.equal(steps.block_in, tokens)


@pytest.mark.parametrize('hw', [(64, 64), (48, 80), (100, 36)])
def test_frozen_eva_trunk_equals_timm_forward(rope_trunk_file, hw):
    """FrozenViT on a DINOv3-style trunk: every block's patch map is timm's forward_intermediates
    and the last one with ``final_norm`` timm's forward_features, at sizes other than img_size,
    non-square and padded ones too."""
    path, ref = rope_trunk_file
    x = torch.randn(2, 3, *hw)
    bb = build(path).eval()
    normed = build(path, out_indices=(-1,), final_norm=True).eval()
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        got = bb(x)
        features = ref.forward_features(x)[:, PREFIX:]
        (last,) = normed(x)
    grid = (-(-hw[0] // 16), -(-hw[1] // 16))
    for g, e in zip(got, expected):
        assert g.shape == (2, 64, *grid)
        assert torch.equal(g, e)
    assert torch.equal(last.flatten(2).transpose(1, 2), features)


def test_vpt_deep_prompts_meet_rope_as_prefix_tokens(rope_trunk_file):
    """VPT-Deep's prompts are unrotated, as timm treats prefix tokens: the same as timm's own
    blocks told that the prompts are more prefix tokens (``attn.num_prefix_tokens``)."""
    path, _ = rope_trunk_file
    bb = build(path, type='VPTDeepViT', num_prompts=[3, 0, 2], prompt_dropout=0.0).eval()
    randomise(bb, 'prompts.', scale=1.0)
    x = torch.randn(2, 3, 48, 64)
    trunk = copy.deepcopy(bb.trunk)
    with torch.no_grad():
        tokens, (h, w), rope = EVA.embed(trunk, x)
        expected = []
        for i, block in enumerate(trunk.blocks):
            m = bb.prompts.counts[i]
            prompts = bb.prompts.get(i).expand(2, -1, -1) if m else tokens[:, :0]
            block.attn.num_prefix_tokens = PREFIX + m  # timm's own prefix handling
            seq = torch.cat([tokens[:, :PREFIX], prompts, tokens[:, PREFIX:]], dim=1)
            out = block(seq, rope=rope)
            tokens = torch.cat([out[:, :PREFIX], out[:, PREFIX + m:]], dim=1)
            expected.append(tokens[:, PREFIX:].reshape(2, h, w, -1).permute(0, 3, 1, 2))
        got = bb(x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    with bb.tuning_disabled(), torch.no_grad():
        assert not torch.allclose(bb(x)[0], got[0], atol=1e-3)  # the prompts do act


def test_rope_with_prompts_leaves_the_prompts_as_they_are():
    from timm.layers import apply_rot_embed_cat
    rope = torch.randn(6, 32)  # sin | cos of 6 patches, head width 16
    q = torch.randn(2, 2, 9, 16)
    out = apply_rot_embed_cat(q, rope_with_prompts(rope, 3), half=True)
    assert torch.equal(out[:, :, :3], q[:, :, :3])
    assert torch.equal(out[:, :, 3:], apply_rot_embed_cat(q[:, :, 3:], rope, half=True))
    assert rope_with_prompts(rope, 0) is rope and rope_with_prompts(None, 3) is None


def cross_attention_by_hand(x, prompts, attn):
    """CVPT's cross-attention on an Eva attention, position-free: q = x W_q + b_q,
    k = P W_k (no key bias), v = P W_v + b_v, all unrotated;
    out = softmax(q k^T / sqrt(d)) v W_o + b_o."""
    B, N, D = x.shape
    H = attn.num_heads
    wq, wk, wv = attn.qkv.weight.chunk(3)
    q = F.linear(x, wq, attn.q_bias).view(B, N, H, -1).transpose(1, 2)
    k = F.linear(prompts, wk).view(-1, H, D // H).transpose(0, 1)
    v = F.linear(prompts, wv, attn.v_bias).view(-1, H, D // H).transpose(0, 1)
    a = (q @ k.transpose(-1, -2) * (D // H) ** -0.5).softmax(-1) @ v
    return attn.proj(a.transpose(1, 2).reshape(B, N, D))


@pytest.mark.parametrize('fold', ['always', 'never'])
def test_cvpt_on_eva_equals_the_block_by_hand(rope_trunk_file, fold):
    """CVPT's three residual branches on DINOv3 blocks, in both cross-attention forms."""
    path, _ = rope_trunk_file
    bb = build(path, type='CVPTViT', num_prompts=4, prompt_dropout=0.0, cross_proj_drop=0.0,
               cross_attn_fold=fold).eval()
    randomise(bb, 'prompts.', scale=1.0)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        tokens, (h, w), rope = bb.embed(x)
        expected = []
        for i, blk in enumerate(bb.trunk.blocks):
            tokens = tokens + blk.gamma_1 * blk.attn(blk.norm1(tokens), rope=rope)
            tokens = tokens + cross_attention_by_hand(tokens, bb.prompts.get(i), blk.attn)
            tokens = tokens + blk.gamma_2 * blk.mlp(blk.norm2(tokens))
            expected.append(tokens[:, PREFIX:].reshape(2, h, w, -1).permute(0, 3, 1, 2))
        for g, e in zip(bb(x), expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_kv_deltas_on_eva_shift_the_key_and_value_biases(rope_trunk_file):
    """The deltas equal timm's own Eva with dk added to its (zero) key bias and dv to its value
    bias; the trunk's tensors stay put; on RoPE, dk acts (it gets a gradient), where on a ViT
    softmax cancels it."""
    path, _ = rope_trunk_file
    bb = build(path, bias_tuning=True).eval()
    randomise(bb, 'kv_bias.', scale=0.5)
    edited = copy.deepcopy(build(path).trunk).eval()
    with torch.no_grad():
        for i, blk in enumerate(edited.blocks):
            blk.attn.k_bias += bb.kv_bias.delta[i, 0]
            blk.attn.v_bias += bb.kv_bias.delta[i, 1]
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        expected = edited.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        for g, e in zip(bb(x), expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    before = {k: v.clone() for k, v in bb.trunk.state_dict().items()}
    bb.train()
    sum(o.square().mean() for o in bb(x)).backward()
    assert bb.kv_bias.delta.grad[:, 0].abs().min() > 0  # dk acts under RoPE
    assert all(torch.equal(v, before[k]) for k, v in bb.trunk.state_dict().items())
    with pytest.raises(ValueError, match='no bias tensor.*export without --merge'):
        bb.kv_bias.merge_into(bb.trunk)


def test_kv_deltas_on_eva_without_biases(tmp_path):
    """DINOv3 ViT-L's own form (no q/k/v bias at all): the deltas are the only biases."""
    ref = randomised_eva('vit_small_patch16_dinov3')
    torch.save(ref.state_dict(), tmp_path / 't.pth')
    bb = build(tmp_path / 't.pth', model_name='vit_small_patch16_dinov3', bias_tuning=True).eval()
    randomise(bb, 'kv_bias.', scale=0.5)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        with_bias = randomised_eva()  # the same weights with the deltas as q/k/v biases
        with_bias.load_state_dict(ref.state_dict(), strict=False)
        for i, blk in enumerate(with_bias.blocks):
            blk.attn.q_bias.zero_()
            blk.attn.k_bias.copy_(bb.kv_bias.delta[i, 0])
            blk.attn.v_bias.copy_(bb.kv_bias.delta[i, 1])
        expected = with_bias.forward_intermediates(x, indices=[0, 1, 2],
                                                   intermediates_only=True)
        for g, e in zip(bb(x), expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_lora_on_eva_equals_peft_and_the_merged_trunk(tmp_path):
    """LoRA on a DINOv3 trunk without qkv bias equals Hugging Face peft's LoRA on the same timm
    Eva; on the q/v-bias form (whose attention calls the fused Linear through timm's
    ``qkv_bias_separate``) it equals the trunk with s B A merged into its weights."""
    from peft import LoraConfig, inject_adapter_in_model
    ref = randomised_eva('vit_small_patch16_dinov3')
    torch.save(ref.state_dict(), tmp_path / 't.pth')
    lora = dict(type='LoRA', rank=4, alpha=8, targets=('qkv', 'proj', 'fc1', 'fc2'))
    bb = build(tmp_path / 't.pth', model_name='vit_small_patch16_dinov3', parts=[lora]).eval()
    randomise(bb, 'lora_')
    names = dict(qkv='attn.qkv', proj='attn.proj', fc1='mlp.fc1', fc2='mlp.fc2')
    theirs = inject_adapter_in_model(LoraConfig(
        r=4, lora_alpha=8, target_modules=r'blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)'),
        copy.deepcopy(ref))
    modules = dict(theirs.named_modules())
    with torch.no_grad():
        for i in range(3):
            for t, n in names.items():
                modules[f'blocks.{i}.{n}'].lora_A['default'].weight.copy_(bb.lora.lora_A[f'{i}_{t}'])
                modules[f'blocks.{i}.{n}'].lora_B['default'].weight.copy_(bb.lora.lora_B[f'{i}_{t}'])
        x = torch.randn(2, 3, 48, 64)
        expected = theirs.eval().forward_intermediates(x, indices=[0, 1, 2],
                                                       intermediates_only=True)
        for g, e in zip(bb(x), expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)

    path = tmp_path / 'qkvb.pth'
    torch.save(randomised_eva().state_dict(), path)
    bb = build(path, parts=[dict(type='LoRA', rank=4, targets=('q', 'v'))]).eval()
    randomise(bb, 'lora_')
    merged = build(path).trunk.eval()  # the same trunk without the part's hooks
    bb.lora.merge_into(merged)
    with torch.no_grad():
        expected = merged.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        got = bb(x)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        with bb.tuning_disabled():
            assert not torch.allclose(bb(x)[-1], got[-1], atol=1e-3)  # the deltas do act


def test_adaptformer_on_eva_equals_the_block_by_hand(rope_trunk_file):
    path, _ = rope_trunk_file
    bb = build(path, parts=[dict(type='AdaptFormer', bottleneck=8, dropout=0.0)]).eval()
    randomise(bb, 'adapters.')
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        tokens, (h, w), rope = bb.embed(x)
        expected = []
        for i, blk in enumerate(bb.trunk.blocks):
            tokens = tokens + blk.gamma_1 * blk.attn(blk.norm1(tokens), rope=rope)
            ad = bb.adaptformer.adapters[str(i)]
            tokens = tokens + blk.gamma_2 * blk.mlp(blk.norm2(tokens)) \
                + 0.1 * ad.up(F.relu(ad.down(tokens)))
            expected.append(tokens[:, PREFIX:].reshape(2, h, w, -1).permute(0, 3, 1, 2))
        for g, e in zip(bb(x), expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cfg', [
    dict(type='DAVPTViT', num_prompts=3, num_guided_prompts=4, bias_tuning=True),
    dict(type='CVPTViT', num_prompts=3, guided_blocks=(1,)),
])
def test_guided_prompts_train_on_eva(rope_trunk_file, cfg):
    """DA-VPT+ and guided CVPT on a DINOv3 trunk: the guided forward records the features the
    metric loss compares, and every tuned tensor gets a gradient."""
    path, _ = rope_trunk_file
    bb = build(path, **cfg).train()
    outs, record = bb.forward_guided(torch.randn(2, 3, 32, 48))
    (i,) = bb.guided_blocks
    tokens, prompts, cls = bb.metric_features(record, i)
    assert tokens.shape == (2, 6, 64) and prompts.shape[-1] == 64 and cls.shape == (2, 64)
    loss = sum(o.square().mean() for o in outs) + tokens.mean() + prompts.square().mean()
    loss.backward()
    for n, p in bb.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_other_trunks_are_refused_by_name_and_the_eva_ones_build():
    with pytest.raises(ValueError, match='resnet18.*VisionTransformer.*Eva'):
        MODELS.build(dict(type='FrozenViT', model_name='resnet18', img_size=64))
    with pytest.raises(ValueError, match='vit_base_patch16_rope_mixed_224 has a per-block'):
        MODELS.build(dict(type='FrozenViT', model_name='vit_base_patch16_rope_mixed_224',
                          img_size=64, model_kwargs=dict(depth=1)))
    post = dict(model_kwargs=dict(TINY_ROPE_KWARGS, use_post_norm=True))
    build(**post)  # the plain trunk runs any Eva block whole
    with pytest.raises(ValueError, match='block 0 of .* is a EvaBlockPostNorm'):
        build(type='CVPTViT', num_prompts=2, **post)
    build(type='CVPTViT', num_prompts=2)
