"""The frozen trunk read from the files users download, against transformers' own models.

Each reference is transformers' ``Dinov2WithRegistersModel`` / ``DINOv3ViTModel`` at the official
ViT-S shapes (width 384, 12 blocks, 6 heads, 4 registers), randomly initialised with random
LayerScale, biases, norms and tokens, saved with ``save_pretrained``. The same weights are also
written in Meta's release layout (key names of facebookresearch/dinov2 and
facebookresearch/dinov3, cited below) and in timm's. Every format must give the trunk the same
tensors (one ``trunk_sha256``) and the patch tokens of transformers' ``last_hidden_state``.
"""
import re
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file
from transformers import (DINOv3ViTConfig, DINOv3ViTModel, Dinov2WithRegistersConfig,
                          Dinov2WithRegistersModel)

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models.backbones import (CheckpointMismatchError, FrozenViT, TrunkWeightsError,
                                           load_trunk_weights, trunk_formats)
from mmseg_prompt.models.backbones.provenance import tensors_sha256

RTOL = 1e-5
DINOV2 = 'vit_small_patch14_reg4_dinov2'
DINOV3 = 'vit_small_patch16_dinov3_qkvb'
META_DINOV3_FILE = 'dinov3_vits16_pretrain_lvd1689m-random.pth'
SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, num_register_tokens=4)


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random LayerScale, biases, norms and tokens (transformers initialises them constant)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith('lambda1'):
                p.copy_(0.1 + 0.4 * noise.abs())
            elif 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith('bias') or 'token' in name or 'position' in name:
                p.copy_(0.1 * noise)
    return model.eval()


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| relative to max |expected|."""
    return ((got - expected).abs().max() / expected.abs().max()).item()


def patch_tokens(bb: FrozenViT, x: torch.Tensor) -> torch.Tensor:
    """The last block's normed patch tokens (B, N, D) of a FrozenViT(out_indices=(-1,),
    final_norm=True)."""
    with torch.no_grad():
        (fmap,) = bb(x)
    return fmap.flatten(2).transpose(1, 2)


def frozen_vit(model_name: str, img_size, **kw) -> FrozenViT:
    return FrozenViT(model_name=model_name, img_size=img_size, out_indices=(-1,),
                     final_norm=True, **kw).eval()


# ---------------------------------------------------------------------------- Meta layouts
def meta_dinov2(hf: dict, depth: int) -> dict:
    """Meta's DINOv2 layout from the keys ``save_pretrained`` writes: the inverse of
    ``create_rename_keys`` and ``read_in_q_k_v`` in transformers'
    src/transformers/models/dinov2_with_registers/convert_dinov2_with_registers_to_hf.py
    (commit 125197b7). Meta's names: facebookresearch/dinov2 (commit b8931f7b)
    dinov2/models/vision_transformer.py lines 110-113 (cls_token, pos_embed with the class
    token's row, register_tokens), 166 (norm), 169 (mask_token); dinov2/layers/block.py lines
    72, 84 (ls1, ls2), layer_scale.py line 27 (gamma), attention.py lines 52, 54 (qkv, proj),
    mlp.py lines 29, 31 (fc1, fc2), patch_embed.py line 65 (proj)."""
    e = 'embeddings.'
    out = {'cls_token': hf[e + 'cls_token'], 'mask_token': hf[e + 'mask_token'],
           'pos_embed': hf[e + 'position_embeddings'],
           'register_tokens': hf[e + 'register_tokens'],
           'patch_embed.proj.weight': hf[e + 'patch_embeddings.projection.weight'],
           'patch_embed.proj.bias': hf[e + 'patch_embeddings.projection.bias'],
           'norm.weight': hf['layernorm.weight'], 'norm.bias': hf['layernorm.bias']}
    for i in range(depth):
        h, m = f'encoder.layer.{i}.', f'blocks.{i}.'
        for p in ('weight', 'bias'):
            for n in ('norm1', 'norm2', 'mlp.fc1', 'mlp.fc2'):
                out[f'{m}{n}.{p}'] = hf[f'{h}{n}.{p}']
            out[f'{m}attn.proj.{p}'] = hf[f'{h}attention.output.dense.{p}']
            out[f'{m}attn.qkv.{p}'] = torch.cat([hf[f'{h}attention.attention.{n}.{p}']
                                                 for n in ('query', 'key', 'value')])
        out[m + 'ls1.gamma'] = hf[h + 'layer_scale1.lambda1']
        out[m + 'ls2.gamma'] = hf[h + 'layer_scale2.lambda1']
    return out


def meta_dinov3(hf: dict, depth: int, head_dim: int, seed: int = 7) -> dict:
    """Meta's DINOv3 layout from the keys ``save_pretrained`` writes: the inverse of
    ``ORIGINAL_TO_CONVERTED_KEY_MAPPING`` and ``split_qkv`` in transformers'
    src/transformers/models/dinov3_vit/convert_dinov3_vit_to_hf.py (commit a77460f2). Meta's
    names: facebookresearch/dinov3 (commit 6876159a) dinov3/models/vision_transformer.py lines
    112, 115 (cls_token, storage_tokens), 163 (norm), 180 (mask_token, (1, D)), 124
    (rope_embed); dinov3/layers/attention.py lines 30-40, 61 (qkv with its ``bias_mask``
    buffer), 63 (proj); block.py lines 54, 66 (ls1, ls2); ffn_layers.py lines 38, 40 (fc1, fc2);
    rope_position_encoding.py lines 50-54, 112-114 (the ``periods`` buffer and its values).

    The key third of ``qkv.bias`` is filled with noise: Meta's model multiplies it by
    ``bias_mask``, which init_weights_vit (vision_transformer.py lines 45-48) sets to 0 there and
    1 elsewhere, so it never reaches the model."""
    e = 'embeddings.'
    out = {'cls_token': hf[e + 'cls_token'], 'mask_token': hf[e + 'mask_token'][0],
           'storage_tokens': hf[e + 'register_tokens'],
           'patch_embed.proj.weight': hf[e + 'patch_embeddings.weight'],
           'patch_embed.proj.bias': hf[e + 'patch_embeddings.bias'],
           'norm.weight': hf['norm.weight'], 'norm.bias': hf['norm.bias'],
           'rope_embed.periods': 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float32)
                                           / (head_dim // 2))}
    g = torch.Generator().manual_seed(seed)
    for i in range(depth):
        h, m = f'layer.{i}.', f'blocks.{i}.'
        for p in ('weight', 'bias'):
            out[f'{m}norm1.{p}'] = hf[f'{h}norm1.{p}']
            out[f'{m}norm2.{p}'] = hf[f'{h}norm2.{p}']
            out[f'{m}attn.proj.{p}'] = hf[f'{h}attention.o_proj.{p}']
            out[f'{m}mlp.fc1.{p}'] = hf[f'{h}mlp.up_proj.{p}']
            out[f'{m}mlp.fc2.{p}'] = hf[f'{h}mlp.down_proj.{p}']
        out[m + 'attn.qkv.weight'] = torch.cat(
            [hf[f'{h}attention.{n}_proj.weight'] for n in 'qkv'])
        q = hf[h + 'attention.q_proj.bias']
        out[m + 'attn.qkv.bias'] = torch.cat([q, torch.randn(q.shape, generator=g),
                                              hf[h + 'attention.v_proj.bias']])
        mask = torch.ones(3 * q.shape[0])
        mask[q.shape[0]:2 * q.shape[0]] = 0
        out[m + 'attn.qkv.bias_mask'] = mask
        out[m + 'ls1.gamma'] = hf[h + 'layer_scale1.lambda1']
        out[m + 'ls2.gamma'] = hf[h + 'layer_scale2.lambda1']
    return out


# ---------------------------------------------------------------------------- saved files
@pytest.fixture(scope='module')
def dinov2(tmp_path_factory):
    """One DINOv2-with-registers ViT-S (image 98: a 7x7 grid, no position resampling on either
    side) as a Hugging Face folder, its model.safetensors alone, and a Meta .pth."""
    root = tmp_path_factory.mktemp('dinov2')
    torch.manual_seed(0)
    hf = randomise(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        patch_size=14, image_size=98, **SMALL)), seed=1)
    hf.save_pretrained(root / 'hf')
    (root / 'alone').mkdir()
    shutil.copy(root / 'hf' / 'model.safetensors', root / 'alone' / 'model.safetensors')
    torch.save(meta_dinov2(load_file(str(root / 'hf' / 'model.safetensors')), 12),
               root / 'dinov2_vits14_reg4_pretrain.pth')
    return root, hf


@pytest.fixture(scope='module')
def dinov3(tmp_path_factory):
    """One DINOv3 ViT-S/16 with q/v biases (no key bias) as a Hugging Face folder, its
    model.safetensors alone, and a Meta .pth (with ``bias_mask`` and ``rope_embed.periods``)."""
    root = tmp_path_factory.mktemp('dinov3')
    torch.manual_seed(0)
    hf = randomise(DINOv3ViTModel(DINOv3ViTConfig(
        patch_size=16, image_size=64, intermediate_size=1536, key_bias=False, **SMALL)), seed=2)
    hf.save_pretrained(root / 'hf')
    (root / 'alone').mkdir()
    shutil.copy(root / 'hf' / 'model.safetensors', root / 'alone' / 'model.safetensors')
    torch.save(meta_dinov3(load_file(str(root / 'hf' / 'model.safetensors')), 12, 64),
               root / META_DINOV3_FILE)
    return root, hf


def test_save_pretrained_writes_the_hub_names(dinov2, dinov3):
    """The folders hold the names the hub files have (transformers renames them at load)."""
    v2 = load_file(str(dinov2[0] / 'hf' / 'model.safetensors'))
    v3 = load_file(str(dinov3[0] / 'hf' / 'model.safetensors'))
    assert 'encoder.layer.0.attention.attention.query.weight' in v2
    assert 'layer.0.attention.q_proj.bias' in v3 and 'layer.0.attention.k_proj.bias' not in v3


# ---------------------------------------------------------------------------- DINOv2
def test_dinov2_every_format_gives_transformers_outputs_and_one_fingerprint(dinov2, tmp_path):
    root, hf = dinov2
    x = torch.randn(2, 3, 98, 98, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(pixel_values=x).last_hidden_state[:, 1 + 4:]
    from_hf = frozen_vit(DINOV2, 98, pretrained=str(root / 'hf'))
    timm_file = tmp_path / 'vit_small_patch14_reg4_dinov2.pth'
    torch.save(from_hf.trunk.state_dict(), timm_file)
    sources = {'HF folder': dict(pretrained=str(root / 'hf')),
               'model.safetensors alone': dict(pretrained=str(root / 'alone' /
                                                               'model.safetensors')),
               'Meta .pth': dict(pretrained=str(root / 'dinov2_vits14_reg4_pretrain.pth')),
               'timm .pth': dict(pretrained=str(timm_file)),
               'HF folder by init_cfg': dict(init_cfg=dict(type='Pretrained',
                                                           checkpoint=str(root / 'hf')))}
    shas = {}
    for what, kw in sources.items():
        bb = frozen_vit(DINOV2, 98, **kw)
        bb.init_weights()
        err = rel_err(patch_tokens(bb, x), expected)
        print(f'DINOv2 98x98 {what}: max relative error {err:.2e}')
        assert err < RTOL, what
        shas[what] = bb.trunk_sha256()
    assert len(set(shas.values())) == 1, shas


def test_dinov2_class_position_row_is_folded_into_the_class_token(dinov2):
    """timm's reg4 model keeps the patch rows only (no_embed_class): the class token's position
    row is added to the class token, as transformers adds it."""
    root, hf = dinov2
    bb = frozen_vit(DINOV2, 98, pretrained=str(root / 'hf'))
    assert bb.trunk.no_embed_class and bb.trunk.pos_embed.shape == (1, 49, 384)
    emb = hf.embeddings
    torch.testing.assert_close(bb.trunk.cls_token, emb.cls_token + emb.position_embeddings[:, :1],
                               rtol=0, atol=0)
    torch.testing.assert_close(bb.trunk.pos_embed, emb.position_embeddings[:, 1:], rtol=0, atol=0)


def small_dinov2(folder, **cfg):
    """A 2-block DINOv2-with-registers saved into ``folder`` (image 56)."""
    torch.manual_seed(0)
    config = dict(SMALL, patch_size=14, image_size=56, num_hidden_layers=2)
    config.update(cfg)
    randomise(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**config)), 5).save_pretrained(
        folder)
    return str(folder)


@pytest.mark.parametrize('change,field,file_value,model_value', [
    (dict(patch_size=16, image_size=64), 'patch size', '(16, 16)', '(14, 14)'),
    (dict(hidden_size=192, num_attention_heads=3), 'width', '192', '384'),
    (dict(num_hidden_layers=3), 'depth', '3', '2'),
    (dict(num_register_tokens=2), 'register count', '2', '4'),
    (dict(use_swiglu_ffn=True), 'gated (SwiGLU) MLP', 'True', 'False'),
    (dict(num_attention_heads=12), 'head count', '12', '6'),
])
def test_dinov2_file_of_another_architecture_is_refused(tmp_path, change, field, file_value,
                                                        model_value):
    build = dict(model_name=DINOV2, img_size=56, model_kwargs=dict(depth=2))
    frozen_vit(pretrained=small_dinov2(tmp_path / 'right'), **build)  # the right file loads
    bad = small_dinov2(tmp_path / 'bad', **change)
    with pytest.raises(TrunkWeightsError) as e:
        frozen_vit(pretrained=bad, **build)
    msg = str(e.value)
    print(msg)
    assert f'its {field} is {file_value} (' in msg and f"the model's is {model_value}" in msg
    assert re.search(r"'embeddings\.|'encoder\.layer\.|config\.json", msg)  # the key/field
    assert 'model_kwargs' in msg and DINOV2 in msg


# ---------------------------------------------------------------------------- DINOv3
def timm_dinov3(path, model_name: str = DINOV3, img_size=64, **kw) -> torch.nn.Module:
    """The timm Eva DINOv3 trunk as FrozenViT builds it, loaded through load_trunk_weights."""
    trunk = timm.create_model(model_name, pretrained=False, num_classes=0, img_size=img_size,
                              dynamic_img_size=True, dynamic_img_pad=True, **kw).eval()
    load_trunk_weights(trunk, path, model_name)
    return trunk


def eva_patch_tokens(trunk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return trunk.forward_features(x)[:, trunk.num_prefix_tokens:]


@pytest.mark.parametrize('hw', [(64, 64), (48, 80)])
def test_dinov3_every_format_gives_transformers_outputs_and_one_fingerprint(dinov3, tmp_path,
                                                                            hw):
    root, hf = dinov3
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = hf(pixel_values=x).last_hidden_state[:, 1 + 4:]
    timm_file = tmp_path / 'vit_small_patch16_dinov3_qkvb.pth'
    torch.save(timm_dinov3(root / 'hf').state_dict(), timm_file)
    sources = {'HF folder': root / 'hf',
               'model.safetensors alone': root / 'alone' / 'model.safetensors',
               'Meta .pth': root / META_DINOV3_FILE, 'timm .pth': timm_file}
    shas = {}
    for what, path in sources.items():
        trunk = timm_dinov3(path)
        err = rel_err(eva_patch_tokens(trunk, x), expected)
        print(f'DINOv3 {hw[0]}x{hw[1]} {what}: max relative error {err:.2e}')
        assert err < RTOL, what
        shas[what] = tensors_sha256(trunk.state_dict().items())
    assert len(set(shas.values())) == 1, shas


@pytest.mark.parametrize('hw', [(64, 64), (48, 80)])
def test_dinov3_through_frozen_vit_every_format_and_one_fingerprint(dinov3, tmp_path, hw):
    """The same through FrozenViT (pretrained= and init_cfg=), with its trunk_sha256."""
    root, hf = dinov3
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = hf(pixel_values=x).last_hidden_state[:, 1 + 4:]
    timm_file = tmp_path / 'vit_small_patch16_dinov3_qkvb.pth'
    torch.save(frozen_vit(DINOV3, 64, pretrained=str(root / 'hf')).trunk.state_dict(), timm_file)
    sources = {'HF folder': dict(pretrained=str(root / 'hf')),
               'model.safetensors alone': dict(pretrained=str(root / 'alone' /
                                                               'model.safetensors')),
               'Meta .pth': dict(pretrained=str(root / META_DINOV3_FILE)),
               'timm .pth': dict(pretrained=str(timm_file)),
               'Meta .pth by init_cfg': dict(init_cfg=dict(
                   type='Pretrained', checkpoint=str(root / META_DINOV3_FILE)))}
    shas = {}
    for what, kw in sources.items():
        bb = frozen_vit(DINOV3, 64, **kw)
        bb.init_weights()
        err = rel_err(patch_tokens(bb, x), expected)
        print(f'DINOv3 FrozenViT {hw[0]}x{hw[1]} {what}: max relative error {err:.2e}')
        assert err < RTOL, what
        shas[what] = bb.trunk_sha256()
    assert len(set(shas.values())) == 1, shas


def small_dinov3(folder, seed: int = 6, zero_qv: bool = False, key_bias: bool = False, **cfg):
    """A 2-block DINOv3 ViT-S saved into ``folder``."""
    torch.manual_seed(0)
    config = dict(SMALL, patch_size=16, image_size=64, num_hidden_layers=2,
                  intermediate_size=1536, key_bias=key_bias)
    config.update(cfg)
    model = randomise(DINOv3ViTModel(DINOv3ViTConfig(**config)), seed)
    if zero_qv:
        with torch.no_grad():
            for layer in model.model.layer:
                layer.attention.q_proj.bias.zero_()
                layer.attention.v_proj.bias.zero_()
    model.save_pretrained(folder)
    return model


def test_dinov3_zero_biases_are_dropped_with_a_log_line_and_nonzero_ones_refused(tmp_path,
                                                                               monkeypatch):
    logged = []
    monkeypatch.setattr(trunk_formats, 'print_log', lambda msg, logger=None: logged.append(msg))
    plain = 'vit_small_patch16_dinov3'
    ref = small_dinov3(tmp_path / 'zero', zero_qv=True)
    trunk = timm_dinov3(tmp_path / 'zero', plain, depth=2)  # loads: its biases are all zero
    assert len(logged) == 1 and 'layer.0.attention.q_proj.bias' in logged[0]
    assert 'all zero' in logged[0] and '2 blocks' in logged[0]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref(pixel_values=x).last_hidden_state[:, 5:]
    err = rel_err(eva_patch_tokens(trunk, x), expected)
    print(f'DINOv3 zero biases dropped, 64x64: max relative error {err:.2e}')
    assert err < RTOL
    small_dinov3(tmp_path / 'nonzero')
    with pytest.raises(TrunkWeightsError) as e:
        timm_dinov3(tmp_path / 'nonzero', plain, depth=2)
    msg = str(e.value)
    print(msg)
    assert "'layer.0.attention.q_proj.bias'" in msg and 'nonzero' in msg
    assert '_qkvb' in msg and "no 'blocks.0.attn.q_bias'" in msg
    timm_dinov3(tmp_path / 'nonzero', DINOV3, depth=2)  # the _qkvb model takes them


def test_dinov3_nonzero_key_bias_is_refused(tmp_path):
    small_dinov3(tmp_path / 'right')
    timm_dinov3(tmp_path / 'right', depth=2)
    model = small_dinov3(tmp_path / 'kbias', key_bias=True)
    assert model.model.layer[0].attention.k_proj.bias.abs().max() > 0
    with pytest.raises(TrunkWeightsError) as e:
        timm_dinov3(tmp_path / 'kbias', depth=2)
    msg = str(e.value)
    print(msg)
    assert "'layer.0.attention.k_proj.bias'" in msg and 'nonzero key bias' in msg


def test_dinov3_masked_key_bias_of_a_meta_file_is_dropped_and_an_unmasked_one_refused(dinov3,
                                                                                     tmp_path):
    root, _ = dinov3
    meta = torch.load(root / META_DINOV3_FILE)
    assert meta['blocks.0.attn.qkv.bias'][384:768].abs().max() > 0  # noise, masked by bias_mask
    timm_dinov3(root / META_DINOV3_FILE)
    del meta['blocks.0.attn.qkv.bias_mask']
    torch.save(meta, tmp_path / 'unmasked.pth')
    with pytest.raises(TrunkWeightsError, match=r"'blocks\.0\.attn\.qkv\.bias' has a nonzero "
                                                r'key bias'):
        timm_dinov3(tmp_path / 'unmasked.pth')


@pytest.mark.parametrize('change,field,file_value,model_value', [
    (dict(patch_size=14, image_size=56), 'patch size', '(14, 14)', '(16, 16)'),
    (dict(hidden_size=192, num_attention_heads=3, intermediate_size=768), 'width', '192',
     '384'),
    (dict(num_hidden_layers=3), 'depth', '3', '2'),
    (dict(num_register_tokens=2), 'register count', '2', '4'),
    (dict(use_gated_mlp=True, hidden_act='silu'), 'gated (SwiGLU) MLP', 'True', 'False'),
    (dict(rope_theta=10000.0), 'RoPE base', '10000.0', '100.0'),
])
def test_dinov3_file_of_another_architecture_is_refused(tmp_path, change, field, file_value,
                                                        model_value):
    small_dinov3(tmp_path / 'right')
    timm_dinov3(tmp_path / 'right', depth=2)  # the right file loads
    small_dinov3(tmp_path / 'bad', **change)
    with pytest.raises(TrunkWeightsError) as e:
        timm_dinov3(tmp_path / 'bad', depth=2)
    msg = str(e.value)
    print(msg)
    assert f'its {field} is {file_value} (' in msg and f"the model's is {model_value}" in msg
    assert re.search(r"'embeddings\.|'layer\.|config\.json", msg)
    assert 'model_kwargs' in msg and DINOV3 in msg


def test_dinov3_gated_mlp_reads_into_timm_swiglu(tmp_path):
    """transformers' gated MLP (down(silu(gate(x)) * up(x))) into timm's SwiGLU
    (fc2(silu(fc1_g(x)) * fc1_x(x))) of the ViT-S+ model."""
    name = 'vit_small_plus_patch16_dinov3_qkvb'
    hidden = timm.create_model(name, num_classes=0, depth=2).blocks[0].mlp.fc1_g.out_features
    ref = small_dinov3(tmp_path / 'gated', use_gated_mlp=True, hidden_act='silu',
                       intermediate_size=hidden)
    trunk = timm_dinov3(tmp_path / 'gated', name, depth=2)
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        expected = ref(pixel_values=x).last_hidden_state[:, 5:]
    err = rel_err(eva_patch_tokens(trunk, x), expected)
    print(f'DINOv3 gated MLP 48x80: max relative error {err:.2e}')
    assert err < RTOL


def test_dinov2_file_is_refused_by_a_dinov3_model(dinov2):
    with pytest.raises(TrunkWeightsError, match=r'DINOv2 \(timm VisionTransformer\) trunk, but '
                                                r'vit_small_patch16_dinov3_qkvb is a Eva'):
        timm_dinov3(dinov2[0] / 'hf')


# ---------------------------------------------------------------------------- provenance
def test_tuned_checkpoint_follows_the_trunk_values_not_the_file_format(dinov2, tmp_path):
    """A tuned checkpoint trained on the HF folder loads on the same trunk read from Meta's file,
    and is refused on another trunk of the same architecture (DINOv2)."""
    root, _ = dinov2
    tuned = frozen_vit(DINOV2, 98, pretrained=str(root / 'hf')).state_dict()
    frozen_vit(DINOV2, 98, pretrained=str(root / 'dinov2_vits14_reg4_pretrain.pth')
               ).load_state_dict(tuned)
    torch.manual_seed(0)
    randomise(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        patch_size=14, image_size=98, **SMALL)), seed=9).save_pretrained(tmp_path / 'other')
    with pytest.raises(CheckpointMismatchError, match='another trunk|sha256'):
        frozen_vit(DINOV2, 98, pretrained=str(tmp_path / 'other')).load_state_dict(tuned)


def test_folder_without_weights_names_what_is_missing(tmp_path):
    with pytest.raises(TrunkWeightsError, match='without model.safetensors'):
        frozen_vit(DINOV2, 98, pretrained=str(tmp_path))


def test_dinov3_tuned_checkpoint_follows_the_trunk_values(dinov3, tmp_path):
    """The same for DINOv3: trained on Meta's file, loaded on the HF folder; another DINOv3
    trunk is refused."""
    root, _ = dinov3
    tuned = frozen_vit(DINOV3, 64, pretrained=str(root / META_DINOV3_FILE)).state_dict()
    frozen_vit(DINOV3, 64, pretrained=str(root / 'hf')).load_state_dict(tuned)
    torch.manual_seed(0)
    randomise(DINOv3ViTModel(DINOv3ViTConfig(
        patch_size=16, image_size=64, intermediate_size=1536, key_bias=False, **SMALL)),
        seed=9).save_pretrained(tmp_path / 'other')
    with pytest.raises(CheckpointMismatchError, match='sha256'):
        frozen_vit(DINOV3, 64, pretrained=str(tmp_path / 'other')).load_state_dict(tuned)
