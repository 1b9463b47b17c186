"""The shared frozen-trunk base, against timm's own forward on the same weights."""
import numpy as np
import pytest
import timm
import torch
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models.backbones import FrozenViT, TrunkWeightsError
from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME


def build(**kw):
    cfg = dict(type='FrozenViT', model_name=TINY_NAME, img_size=224, model_kwargs=TINY_KWARGS,
               out_indices=(0, 1, 2))
    cfg.update(kw)
    return MODELS.build(cfg)


def test_outputs_equal_timm_forward_intermediates(tiny_trunk_file):
    path, _ = tiny_trunk_file  # reference rebuilt below with dynamic size and padding
    ref = timm.create_model(TINY_NAME, num_classes=0, img_size=224, dynamic_img_size=True,
                            dynamic_img_pad=True, **TINY_KWARGS)
    ref.load_state_dict(torch.load(path))
    ref.eval()
    bb = build(pretrained=str(path)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        got = bb(x)
    assert len(got) == 3
    for g, e in zip(got, expected):
        assert g.shape == (2, 64, 14, 14)
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


@pytest.mark.parametrize('hw,grid', [((224, 224), (14, 14)), ((256, 256), (16, 16)),
                                     ((32, 32), (2, 2)), ((112, 224), (7, 14)),
                                     ((234, 345), (15, 22))])
def test_any_input_size_pads_like_mmseg(hw, grid):
    bb = build().eval()
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, *hw))
    assert all(o.shape == (1, 64, *grid) for o in outs)


def test_output_cls_token_and_final_norm(tiny_trunk_file):
    path, ref = tiny_trunk_file
    bb = build(pretrained=str(path), output_cls_token=True, final_norm=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = bb(x)
    assert all(isinstance(o, list) and o[1].shape == (1, 64) for o in outs)
    # final_norm acts on the last block only (mmseg ViT's rule)
    plain = build(pretrained=str(path), output_cls_token=True).eval()
    with torch.no_grad():
        plain_outs = plain(x)
    torch.testing.assert_close(outs[0][0], plain_outs[0][0])
    last_tokens = torch.cat([plain_outs[2][1][:, None],
                             plain_outs[2][0].flatten(2).transpose(1, 2)], 1)
    torch.testing.assert_close(outs[2][1], bb.trunk.norm(last_tokens)[:, 0])


def test_trunk_is_frozen_and_stays_in_eval_mode():
    bb = build(model_kwargs=dict(TINY_KWARGS, drop_path_rate=0.5, drop_rate=0.5))
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert bb.training and not any(m.training for m in bb.trunk.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = bb(x)[-1], bb(x)[-1]
    torch.testing.assert_close(a, b)  # no dropout / drop-path noise in frozen blocks
    noisy = build(model_kwargs=dict(TINY_KWARGS, drop_path_rate=0.5), trunk_train_mode=True)
    noisy.train()
    assert noisy.trunk.training
    with torch.no_grad():
        assert not torch.equal(noisy(x)[-1], noisy(x)[-1])


def test_counts_logged_once(monkeypatch):
    from mmseg_prompt.models.backbones import frozen_vit
    said = []
    monkeypatch.setattr(frozen_vit, 'print_log', lambda msg, **kw: said.append(msg))
    bb = build()
    bb.train()
    bb.train()
    bb.eval()
    total = sum(p.numel() for p in bb.parameters())
    assert said == [f'FrozenViT ({TINY_NAME}): trainable params 0 / total {total:,} (0.0000%)']


def test_init_weights_loads_pretrained_and_never_rerandomises(tiny_trunk_file):
    path, ref = tiny_trunk_file
    bb = build(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    assert not torch.equal(bb.trunk.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    bb.init_weights()
    for (k, a), b in zip(bb.trunk.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    # built with `pretrained=`, a later init_weights (as the runner calls it) keeps the weights
    bb2 = build(pretrained=str(path))
    bb2.init_weights()
    assert torch.equal(bb2.trunk.pos_embed, ref.pos_embed)


def test_pretrained_pos_embed_is_resampled_to_img_size(tiny_trunk_file):
    path, ref = tiny_trunk_file  # saved with a 14x14 grid (224)
    bb = build(pretrained=str(path), img_size=128)  # 8x8 grid
    assert bb.trunk.pos_embed.shape == (1, 1 + 64, 64)
    expected = timm.layers.resample_abs_pos_embed(ref.pos_embed, (8, 8), num_prefix_tokens=1)
    torch.testing.assert_close(bb.trunk.pos_embed, expected)


def test_safetensors_and_npz_formats(tmp_path, tiny_trunk_file):
    from safetensors.torch import save_file
    path, ref = tiny_trunk_file
    st = tmp_path / 'tiny.safetensors'
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(st))
    bb = build(pretrained=str(st))
    assert torch.equal(bb.trunk.blocks[2].mlp.fc2.weight, ref.blocks[2].mlp.fc2.weight)
    # a Google-style .npz, written in the layout timm's _load_weights reads
    npz = tmp_path / 'tiny.npz'
    np.savez(npz, **_to_google_npz(ref))
    bb = build(pretrained=str(npz))
    torch.testing.assert_close(bb.trunk.blocks[1].attn.qkv.weight, ref.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(bb.trunk.patch_embed.proj.weight, ref.patch_embed.proj.weight)


def _to_google_npz(m):
    """The big_vision/ViT-JAX names and layouts of a timm ViT's tensors."""
    D = m.embed_dim
    H = m.blocks[0].attn.num_heads
    t = lambda x: x.detach().numpy()  # noqa: E731
    out = {'embedding/kernel': t(m.patch_embed.proj.weight.permute(2, 3, 1, 0)),
           'embedding/bias': t(m.patch_embed.proj.bias), 'cls': t(m.cls_token),
           'Transformer/posembed_input/pos_embedding': t(m.pos_embed),
           'Transformer/encoder_norm/scale': t(m.norm.weight),
           'Transformer/encoder_norm/bias': t(m.norm.bias)}
    for i, b in enumerate(m.blocks):
        p = f'Transformer/encoderblock_{i}/'
        out[p + 'LayerNorm_0/scale'] = t(b.norm1.weight)
        out[p + 'LayerNorm_0/bias'] = t(b.norm1.bias)
        out[p + 'LayerNorm_2/scale'] = t(b.norm2.weight)
        out[p + 'LayerNorm_2/bias'] = t(b.norm2.bias)
        qkv_w = b.attn.qkv.weight.detach().reshape(3, D, D)
        qkv_b = b.attn.qkv.bias.detach().reshape(3, D)
        for j, n in enumerate(('query', 'key', 'value')):
            out[p + f'MultiHeadDotProductAttention_1/{n}/kernel'] = t(
                qkv_w[j].T.reshape(D, H, D // H))
            out[p + f'MultiHeadDotProductAttention_1/{n}/bias'] = t(qkv_b[j].reshape(H, D // H))
        out[p + 'MultiHeadDotProductAttention_1/out/kernel'] = t(
            b.attn.proj.weight.T.reshape(H, D // H, D))
        out[p + 'MultiHeadDotProductAttention_1/out/bias'] = t(b.attn.proj.bias)
        out[p + 'MlpBlock_3/Dense_0/kernel'] = t(b.mlp.fc1.weight.T)
        out[p + 'MlpBlock_3/Dense_0/bias'] = t(b.mlp.fc1.bias)
        out[p + 'MlpBlock_3/Dense_1/kernel'] = t(b.mlp.fc2.weight.T)
        out[p + 'MlpBlock_3/Dense_1/bias'] = t(b.mlp.fc2.bias)
    return out


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(TrunkWeightsError, match='pretrained trunk file not found: .*nope.pth'):
        build(pretrained=str(tmp_path / 'nope.pth'))


def test_checkpoint_of_another_width_names_the_first_key(tmp_path):
    other = timm.create_model(TINY_NAME, num_classes=0, depth=3, embed_dim=96, num_heads=2)
    f = tmp_path / 'wide.pth'
    torch.save(other.state_dict(), f)
    with pytest.raises(TrunkWeightsError) as e:
        build(pretrained=str(f))
    msg = str(e.value)
    assert str(f) in msg and "'cls_token' has shape (1, 1, 96)" in msg and '(1, 1, 64)' in msg


def test_checkpoint_missing_a_block_is_an_error_not_random_init(tmp_path, tiny_trunk_file):
    path, ref = tiny_trunk_file
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith('blocks.2.')}
    f = tmp_path / 'partial.pth'
    torch.save(sd, f)
    with pytest.raises(TrunkWeightsError, match="has no 'blocks.2.norm1.weight'.*randomly"):
        build(pretrained=str(f))


def test_checkpoint_with_extra_blocks_is_an_error(tmp_path):
    deeper = timm.create_model(TINY_NAME, num_classes=0, **dict(TINY_KWARGS, depth=4))
    f = tmp_path / 'deeper.pth'
    torch.save(deeper.state_dict(), f)
    with pytest.raises(TrunkWeightsError, match="'blocks.3.norm1.weight'"):
        build(pretrained=str(f))


def test_bad_options_are_refused(tiny_trunk_file):
    with pytest.raises(ValueError, match='out_indices has 5'):
        build(out_indices=(0, 5))
    with pytest.raises(ValueError, match='accepts only init_cfg'):
        build(init_cfg=dict(type='Normal', std=0.02))
    path, _ = tiny_trunk_file
    with pytest.raises(ValueError, match='either `pretrained` or `init_cfg`'):
        build(pretrained=str(path), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    assert build(out_indices=(-1,)).out_indices == (2,)


def test_vit_large_builds_with_the_papers_shape():
    """On the meta device (the tensors' shapes, no storage): the build and a forward's shapes."""
    with torch.device('meta'):
        bb = FrozenViT()  # the default: vit_large_patch16_384 at 512, blocks 7, 11, 15, 23
        assert bb.depth == 24 and bb.embed_dim == 1024
        assert sum(p.numel() for p in bb.parameters()) == pytest.approx(303.3e6, rel=0.01)
        with torch.no_grad():
            outs = bb.eval()(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 1024, 4, 6)] * 4
