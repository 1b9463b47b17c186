"""A frozen trunk stored in bfloat16 (``trunk_dtype='bfloat16'``): bit for bit what the float32
trunk computes under bfloat16 autocast, half its memory, no weight cast per step, and the
float32 file's fingerprint, so checkpoints move between the two."""
import pytest
import torch

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models.backbones.provenance import CheckpointMismatchError
from mmseg_prompt.models.backbones.trunk_storage import matmul_layers
from mmseg_prompt.utils.op_counter import KernelOpCounter

from test_prompt_backbones import build

CASES = {
    'trunk': dict(type='FrozenViT'),
    'VPT-Deep': dict(type='VPTDeepViT', num_prompts=[3, 5, 0], prompt_dropout=0.1),
    'CVPT folded': dict(type='CVPTViT', num_prompts=3, cross_attn_fold='always'),
    'CVPT plain': dict(type='CVPTViT', num_prompts=3, cross_attn_fold='never'),
    'DA-VPT+': dict(type='DAVPTViT', num_prompts=3, num_guided_prompts=4, guided_blocks=(1,),
                    bias_tuning=True),
    'LoRA + AdaptFormer': dict(type='FrozenViT', parts=[dict(type='LoRA', rank=2),
                                                        dict(type='AdaptFormer', bottleneck=4)]),
    'BitFit': dict(type='FrozenViT', parts=[dict(type='BitFit')]),
}


def _step(bb, x, autocast):
    """Outputs, tuned gradients and the input's gradient of one training step; the same RNG
    draws for every build."""
    for p in bb.parameters():
        p.grad = None
    x = x.clone().requires_grad_(True)
    torch.manual_seed(1)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        out = bb(x)
    sum((o.float() ** 2).mean() for o in out).backward()
    return [o.detach() for o in out] + [p.grad for p in bb.parameters() if p.requires_grad] \
        + [x.grad]


@pytest.mark.parametrize('case', CASES)
def test_bfloat16_trunk_equals_the_float32_trunk_under_autocast_bit_for_bit(family_trunk, case):
    """On a ViT and on a DINOv3 (Eva) trunk."""
    results = []
    for dtype in ('float32', 'bfloat16'):
        torch.manual_seed(0)
        bb = build(trunk_dtype=dtype, img_size=64, **family_trunk, **CASES[case]).train()
        with torch.no_grad():  # tuned tensors away from their zero init, so every term counts
            for p in bb.parameters():
                if p.requires_grad:
                    p.normal_(std=0.05)
        x = torch.randn(2, 3, 48, 64)
        # the float32 trunk under the caller's autocast; the bfloat16 one enters it itself
        results.append(_step(bb, x, autocast=dtype == 'float32'))
    for got, expected in zip(*results):
        assert got.dtype == expected.dtype and torch.equal(got, expected)
    without = build(img_size=64, **family_trunk, **CASES[case]).train()  # no autocast at all
    without.load_state_dict(bb.state_dict())
    for got, expected in zip(results[1], _step(without, x, autocast=False)):
        torch.testing.assert_close(got, expected, atol=0.05, rtol=0.05)  # bfloat16's tolerance


def _bytes(module):
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_bfloat16_trunk_stores_its_matmul_weights_in_half_the_bytes(tiny_trunk_file):
    path, _ = tiny_trunk_file
    full = build('CVPTViT', pretrained=str(path))
    half = build('CVPTViT', pretrained=str(path), trunk_dtype='bfloat16')
    for layer in matmul_layers(half.trunk):
        assert layer.weight.dtype == layer.bias.dtype == torch.bfloat16
    for name in ('norm1', 'norm2'):  # autocast runs norms in float32: kept so, never cast
        assert getattr(half.trunk.blocks[0], name).weight.dtype == torch.float32
    assert half.trunk.pos_embed.dtype == half.trunk.cls_token.dtype == torch.float32
    assert not any(p.requires_grad for p in half.trunk.parameters())
    matmul = sum(p.numel() for layer in matmul_layers(full.trunk) for p in layer.parameters())
    assert _bytes(full.trunk) - _bytes(half.trunk) == 2 * matmul  # 2 bytes saved per value
    assert _bytes(half.prompts) == _bytes(full.prompts)  # what trains stays float32


def _trunk_weight_casts(bb, autocast):
    """How many dtype copies of the trunk's own parameters one training step makes."""
    trunk_ptrs = {p.data_ptr() for p in bb.trunk.parameters()}

    class Casts(KernelOpCounter):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ == '_to_copy' and args[0].data_ptr() in trunk_ptrs:
                self.counts['trunk weight'] += 1
            return func(*args, **(kwargs or {}))
    with Casts() as casts:
        _step(bb, torch.randn(1, 3, 32, 32), autocast)
    return casts.counts['trunk weight']


def test_no_weight_of_a_bfloat16_trunk_is_cast_per_step(tiny_trunk_file):
    path, _ = tiny_trunk_file
    for case in ('CVPT plain', 'CVPT folded', 'VPT-Deep'):
        float32 = build(pretrained=str(path), **CASES[case]).train()
        assert _trunk_weight_casts(float32, autocast=True) > 0  # autocast casts every use
        bfloat16 = build(pretrained=str(path), trunk_dtype='bfloat16', **CASES[case]).train()
        assert _trunk_weight_casts(bfloat16, autocast=False) == 0


def test_bfloat16_trunk_has_the_float32_files_fingerprint_and_checkpoints_move(tiny_trunk_file,
                                                                              tmp_path):
    path, _ = tiny_trunk_file
    full = build('VPTDeepViT', pretrained=str(path))
    half = build('VPTDeepViT', pretrained=str(path), trunk_dtype='bfloat16')
    by_init_cfg = build('VPTDeepViT', trunk_dtype='bfloat16',
                        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    by_init_cfg.init_weights()
    assert next(matmul_layers(by_init_cfg.trunk)).weight.dtype == torch.bfloat16
    assert half.trunk_sha256() == full.trunk_sha256() == by_init_cfg.trunk_sha256()
    other = tmp_path / 'other.pth'
    torch.manual_seed(9)
    torch.save({k: torch.randn_like(v) for k, v in torch.load(path).items()}, other)
    assert build('VPTDeepViT', pretrained=str(other),
                 trunk_dtype='bfloat16').trunk_sha256() != full.trunk_sha256()
    # tuned-only checkpoints load both ways; another trunk is still refused
    with torch.no_grad():
        for p in full.prompts.tokens.values():
            p.normal_()
    half.load_state_dict(full.state_dict())
    full.load_state_dict(half.state_dict())
    with pytest.raises(CheckpointMismatchError, match='trained with the frozen trunk loaded'):
        build('VPTDeepViT', pretrained=str(other), trunk_dtype='bfloat16').load_state_dict(
            full.state_dict())
    # a full checkpoint goes into a bfloat16 trunk, fingerprinted as saved
    full.save_frozen_trunk = True
    state = full.state_dict()
    fresh = build('VPTDeepViT', trunk_dtype='bfloat16')
    fresh.load_state_dict(state)
    assert fresh.trunk_sha256() == full.trunk_sha256()
    assert fresh.trunk.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    torch.testing.assert_close(fresh.trunk.blocks[0].attn.qkv.weight.float(),
                               full.trunk.blocks[0].attn.qkv.weight, atol=0.01, rtol=0.01)


def test_a_trunk_dtype_other_than_the_two_is_refused():
    with pytest.raises(ValueError, match=r"trunk_dtype must be one of \['bfloat16', 'float32'\]"):
        build('CVPTViT', trunk_dtype='float16')
    for dtype in ('float32', 'bfloat16'):
        assert build('CVPTViT', trunk_dtype=dtype).trunk.blocks[0].mlp.fc1.weight.dtype == \
            getattr(torch, dtype)
