"""BitFit (bitfit.py): at init the trunk bit for bit, with trained deltas the trunk whose bias
tensors were edited by hand, merged by the export tool, counted by hand (ViT-L included), every
delta trained, on a ViT and on a DINOv3 (Eva) trunk with q/v biases."""
import copy
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME, TINY_ROPE_KWARGS, TINY_ROPE_NAME

from conftest import randomised_rope_trunk

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRUNKS = dict(vit=dict(model_name=TINY_NAME, model_kwargs=TINY_KWARGS),
              dinov3=dict(model_name=TINY_ROPE_NAME, model_kwargs=TINY_ROPE_KWARGS))
BITFIT = dict(type='BitFit')


def build(path, family, **cfg):
    torch.manual_seed(0)
    return MODELS.build(dict(dict(type='FrozenViT', img_size=64, out_indices=(0, 1, 2),
                                  pretrained=str(path), **TRUNKS[family]), **cfg))


@pytest.fixture(params=sorted(TRUNKS))
def trunk(request, tiny_trunk_file, rope_trunk_file):
    """(family, local trunk file): a tiny ViT, and a tiny DINOv3 with random q/v biases."""
    path, _ = tiny_trunk_file if request.param == 'vit' else rope_trunk_file
    return request.param, path


def randomise(module, scale=0.3):
    """Trained-looking values in every delta."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.bitfit.deltas.values():
            p.normal_(0, scale)


def hand_count(width, depth, qv_bias, qkv_bias, final_norm=False):
    """Bias values by hand: per block norm1, the q/k/v biases (3 W for a ViT's fused Linear,
    2 W for Eva's q and v, 0 without), proj, norm2, fc1 (4 W), fc2; the patch embedding; the
    final norm."""
    qkv = 3 * width if qkv_bias else 2 * width if qv_bias else 0
    block = width + qkv + width + width + 4 * width + width
    return depth * block + width + (width if final_norm else 0)


def test_at_init_bitfit_is_the_trunk_bit_for_bit(trunk):
    """Zero deltas: the backbone's outputs equal timm's own forward of the same trunk (the Eva
    one with timm's ``qkv_bias_separate``, the form its hooked attention runs:
    docs/methods.md, "Hooks on an Eva attention with q/v biases")."""
    family, path = trunk
    bb = build(path, family, parts=[BITFIT]).eval()
    reference = copy.deepcopy(build(path, family).trunk).eval()
    for block in reference.blocks if family == 'dinov3' else ():
        block.attn.qkv_bias_separate = True
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=[0, 1, 2], norm=False,
                                                   intermediates_only=True)
        for got, e in zip(bb(x), expected):
            assert torch.equal(got, e)


def test_trained_deltas_equal_the_trunk_with_its_biases_edited_by_hand_and_merge_into(trunk):
    """Every bias tensor of the trunk the backbone runs (the final norm with final_norm=True;
    Eva's q_bias and v_bias) edited by hand, b + delta, in a plain backbone: the same outputs;
    merge_into writes that very trunk."""
    family, path = trunk
    bb = build(path, family, final_norm=True, parts=[BITFIT]).eval()
    randomise(bb)
    edited = build(path, family, final_norm=True).eval()
    names = [n for n, _ in edited.trunk.named_parameters()
             if n.endswith(('.bias', 'q_bias', 'v_bias'))]
    expected_names = {'patch_embed.proj.bias', 'norm.bias'} | {
        f'blocks.{i}.{m}' for i in range(3) for m in (
            'norm1.bias', 'attn.proj.bias', 'norm2.bias', 'mlp.fc1.bias', 'mlp.fc2.bias') + (
            ('attn.qkv.bias',) if family == 'vit' else ('attn.q_bias', 'attn.v_bias'))}
    assert set(names) == expected_names
    assert set(bb.bitfit.deltas) == {n.replace('.', '-') for n in names}  # the documented keys
    with torch.no_grad():
        for n in names:
            edited.trunk.get_parameter(n).add_(bb.bitfit.deltas[n.replace('.', '-')])
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        tuned, by_hand = bb(x), edited(x)
        for got, e in zip(tuned, by_hand):
            torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-5)
        with bb.tuning_disabled():  # and the deltas do change every output
            assert all((a - b).abs().max() > 1e-2 for a, b in zip(bb(x), tuned))
        merged = copy.deepcopy(bb)
        merged.bitfit.merge_into(merged.trunk)
        for (k, a), b in zip(merged.trunk.state_dict().items(), edited.trunk.state_dict().values()):
            assert torch.equal(a, b), k
        with merged.tuning_disabled():
            for got, e in zip(merged(x), by_hand):
                torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-5)
    # the backbone's own trunk tensors never changed
    plain = build(path, family, final_norm=True)
    assert all(torch.equal(a, b) for a, b in zip(bb.trunk.state_dict().values(),
                                                 plain.trunk.state_dict().values()))


def test_tuned_values_are_the_bias_values_counted_by_hand(tmp_path):
    """The tiny trunks of both families (with and without q/v biases, with and without the
    final norm) and ViT-L/16 (built on the meta device: shapes only): 24 x 11,264 + 1,024 =
    271,360 values without the final norm, 272,384 with it (docs/methods.md, "BitFit")."""
    ref = randomised_rope_trunk('vit_small_patch16_dinov3')  # DINOv3 ViT-L's form: no q/k/v bias
    torch.save(ref.state_dict(), tmp_path / 'no_bias.pth')
    cases = [('vit', TINY_NAME, TINY_KWARGS, dict(qkv_bias=True, qv_bias=False)),
             ('dinov3', TINY_ROPE_NAME, TINY_ROPE_KWARGS, dict(qkv_bias=False, qv_bias=True)),
             ('dinov3', 'vit_small_patch16_dinov3', TINY_ROPE_KWARGS,
              dict(qkv_bias=False, qv_bias=False))]
    for family, name, kwargs, biases in cases:
        for final_norm in (False, True):
            bb = MODELS.build(dict(type='FrozenViT', model_name=name, model_kwargs=kwargs,
                                   img_size=64, out_indices=(2,), final_norm=final_norm,
                                   parts=[BITFIT]))
            tuned = sum(p.numel() for p in bb.parameters() if p.requires_grad)
            assert tuned == hand_count(64, 3, final_norm=final_norm, **biases), (name, final_norm)
    assert hand_count(1024, 24, qv_bias=False, qkv_bias=True) == 271_360
    for final_norm, values in ((False, 271_360), (True, 272_384)):
        with torch.device('meta'):
            vitl = MODELS.build(dict(type='FrozenViT', model_name='vit_large_patch16_384',
                                     img_size=512, final_norm=final_norm,
                                     parts=[BITFIT]))
        assert sum(p.numel() for p in vitl.parameters() if p.requires_grad) == values
        # every bias the timm model has, the final norm's only when it runs
        assert values == sum(p.numel() for n, p in vitl.trunk.named_parameters()
                             if n.endswith('bias') and (final_norm or n != 'norm.bias'))


def test_a_gradient_reaches_every_delta_and_biases_take_no_weight_decay(trunk):
    """One training backward: every delta gets a gradient, except what softmax cancels on a ViT
    (the key bias: q . (k_j + dk) shifts every logit of a query alike), which gets none to
    float rounding; under RoPE the key bias is not the trunk's (none is added). The optimizer
    gives the deltas no weight decay."""
    family, path = trunk
    bb = build(path, family, parts=[BITFIT]).train()
    randomise(bb, scale=0.05)
    out = bb(torch.randn(2, 3, 48, 64))
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out).backward()
    for key, delta in bb.bitfit.deltas.items():
        grad = delta.grad
        if key.endswith('qkv-bias'):  # ViT: [q, k, v]
            q, k, v = grad.chunk(3)
            assert q.abs().min() > 0 and v.abs().min() > 0, key
            assert k.abs().max() < 1e-5 * v.abs().max(), key
        else:
            assert grad is not None and grad.abs().max() > 0, key
    assert all(p.grad is None for p in bb.trunk.parameters())
    wrapper = build_optim_wrapper(bb, dict(
        type='OptimWrapper', constructor='PromptOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)))
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    assert {decay[id(p)] for p in bb.bitfit.deltas.values()} == {0.0}
    assert len(decay) == len(bb.bitfit.deltas)


def test_with_the_kv_bias_deltas_both_shifts_add(trunk):
    """BitFit with bias_tuning=True (the K/V deltas, DA-VPT+): allowed, the K/V bias gets both
    deltas; equal to the trunk with BitFit's deltas in its biases and the K/V deltas added to
    the key and value outputs by hand."""
    family, path = trunk
    bb = build(path, family, bias_tuning=True, parts=[BITFIT]).eval()
    randomise(bb)
    with torch.no_grad():
        bb.kv_bias.delta.normal_(0, 0.3)
    edited = build(path, family).eval()
    with torch.no_grad():
        for key, delta in bb.bitfit.deltas.items():
            edited.trunk.get_parameter(key.replace('-', '.')).add_(delta)
        for i, block in enumerate(edited.trunk.blocks):
            if family == 'vit':
                block.attn.qkv.bias[64:] += bb.kv_bias.delta[i].flatten()
            else:
                block.attn.k_bias += bb.kv_bias.delta[i, 0]
                block.attn.v_bias += bb.kv_bias.delta[i, 1]
        x = torch.randn(1, 3, 32, 48)
        for got, e in zip(bb(x), edited(x)):
            torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-5)


def test_the_final_norm_is_tuned_exactly_when_the_backbone_runs_it(tiny_trunk_file):
    """The backbone passes whether it runs the final norm (``final_norm`` and the last block
    among ``out_indices``); a config that sets it on the part is refused, naming the key."""
    path, _ = tiny_trunk_file
    for final_norm, out_indices, tuned in ((True, (0, 2), True), (True, (0, 1), False),
                                           (False, (0, 2), False)):
        bb = build(path, 'vit', final_norm=final_norm, out_indices=out_indices, parts=[BITFIT])
        assert ('norm-bias' in bb.bitfit.deltas) == tuned == bb.runs_final_norm
        if 2 in out_indices:  # (blocks after the last output feed nothing)
            sum(o.sum() for o in bb.train()(torch.randn(1, 3, 32, 32))).backward()
            assert all(d.grad is not None for d in bb.bitfit.deltas.values())  # none idle: DDP
    with pytest.raises(ValueError, match=r"BitFit takes \['final_norm'\] from the trunk"):
        build(path, 'vit', final_norm=True, parts=[dict(BITFIT, final_norm=True)])


@pytest.mark.slow  # tools/export_full_checkpoint.py in a subprocess, then mmseg's init_model
def test_export_merges_bitfit_into_the_trunk(tmp_path, tiny_trunk_file):
    """`export_full_checkpoint.py --merge` folds the deltas into the trunk's biases and writes
    the config without BitFit; mmseg's init_model on the merged files computes what the tuned
    model computes (the Eva trunk's q/v merge: the in-process test above)."""
    from mmseg.apis import init_model

    from mmseg_prompt.testing import write_linear_head_config
    family, (path, _) = 'vit', tiny_trunk_file
    backbone = dict(type='FrozenViT', img_size=64, out_indices=(0, 1, 2), pretrained=str(path),
                    parts=[BITFIT], **TRUNKS[family])
    cfg = write_linear_head_config(tmp_path / 'bitfit.py', backbone)
    model = init_model(str(cfg), device='cpu')
    randomise(model.backbone)
    torch.save(dict(meta={}, state_dict=model.state_dict()), tmp_path / 'tuned.pth')
    res = subprocess.run([sys.executable, f'{REPO}/tools/export_full_checkpoint.py', str(cfg),
                          str(tmp_path / 'tuned.pth'), str(tmp_path / 'merged.pth'), '--merge'],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "merged into the trunk's weights: BitFit" in res.stdout
    merged = init_model(str(tmp_path / 'merged.py'), str(tmp_path / 'merged.pth'), device='cpu')
    assert merged.backbone.part_names == ()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, e in zip(merged.backbone(x), model.eval().backbone(x)):
            torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-5)


def test_checkpoints_load_into_the_same_biases_and_refuse_others(tiny_trunk_file):
    """The deltas' keys say which biases there are (weights_layout adds nothing): a checkpoint
    loads into the same configuration, and one with the final norm's delta is refused by a
    BitFit without it and the other way round, naming the key."""
    from mmseg_prompt.models.backbones import TrunkWeightsError
    path, _ = tiny_trunk_file
    bb = build(path, 'vit', parts=[BITFIT])
    randomise(bb)
    assert bb.weights_layout() == dict(out_indices=[0, 1, 2], final_norm=False)
    same = build(path, 'vit', parts=[BITFIT])
    same.load_state_dict(bb.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(same.bitfit.deltas.values(),
                                                 bb.bitfit.deltas.values()))
    with_norm = build(path, 'vit', final_norm=True, parts=[BITFIT])
    with pytest.raises(TrunkWeightsError, match='bitfit.deltas.norm-bias'):
        with_norm.load_state_dict(bb.state_dict())
    with pytest.raises(TrunkWeightsError, match='bitfit.deltas.norm-bias'):
        bb.load_state_dict(with_norm.state_dict())
