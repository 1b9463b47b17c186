"""The tuning parts combine by configuration over the one frozen-trunk base (docs/methods.md,
"Composition"): prompt parts built from a sub-config, K/V bias deltas on any of them, and the
registered method names as those combinations."""
import copy
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_prompt.models.backbones import TrunkWeightsError, provenance
from mmseg_prompt.testing import write_linear_head_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRUNK = dict(model_name='vit_base_patch16_224', img_size=64, out_indices=(0, 1, 2),
             model_kwargs=dict(depth=3, embed_dim=64, num_heads=2))


def build(trunk_file, **cfg):
    torch.manual_seed(0)
    return MODELS.build(dict(TRUNK, pretrained=str(trunk_file), **cfg))


@pytest.mark.parametrize('method, part', [
    (dict(type='VPTDeepViT', num_prompts=[3, 0, 2], prompt_dropout=0.0),
     dict(type='SequencePrompts', num_prompts=[3, 0, 2], dropout=0.0)),
    (dict(type='CVPTViT', num_prompts=[3, 0, 2], prompt_dropout=0.0, cross_proj_drop=0.0),
     dict(type='CrossAttentionPrompts', num_prompts=[3, 0, 2], dropout=0.0, proj_drop=0.0)),
    (dict(type='DAVPTViT', num_prompts=2, num_guided_prompts=4, prompt_dropout=0.0,
          bias_tuning=True),
     dict(type='SequencePrompts', num_prompts=2, guided_blocks=(-1,), num_guided_prompts=4,
          dropout=0.0)),
])
def test_the_registered_methods_are_parts_over_the_frozen_base(tiny_trunk_file, method, part):
    """Each method name builds the same weights, layout and outputs as FrozenViT with the part's
    sub-config; so one's checkpoint is another's, key by key."""
    path, _ = tiny_trunk_file
    named = build(path, **method).eval()
    composed = build(path, type='FrozenViT', prompts=part,
                     bias_tuning=method.get('bias_tuning', False)).eval()
    tuned = {k: v for k, v in named.state_dict().items() if k != 'provenance'}
    assert tuned.keys() == {k for k in composed.state_dict() if k != 'provenance'}
    with torch.no_grad():
        for v in tuned.values():
            v.normal_()  # trained-looking values, bias deltas included
    composed.load_state_dict({**tuned, 'provenance': composed.state_dict()['provenance']})
    assert named.weights_layout() == composed.weights_layout()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        for a, b in zip(named(x), composed(x)):
            torch.testing.assert_close(a, b)
        plain = build(path, type='FrozenViT').eval()(x)
        assert (named(x)[-1] - plain[-1]).abs().max() > 1e-3  # the part does act


def test_kv_bias_deltas_on_cvpt_equal_edited_self_attention_biases(tiny_trunk_file):
    """CVPT+ (``bias_tuning=True`` on CVPT): the deltas shift the K and V bias of each block's
    self-attention; the cross-attention reads the prompts through the frozen projection; only
    prompts and deltas train and the pretrained biases stay put."""
    path, _ = tiny_trunk_file
    opts = dict(type='CVPTViT', num_prompts=3, prompt_dropout=0.0, cross_proj_drop=0.0)
    plus = build(path, bias_tuning=True, **opts).eval()
    with torch.no_grad():
        plus.kv_bias.delta.normal_()
        for p in plus.prompts.parameters():
            p.mul_(20)  # trained prompts are larger than at init
    edited = build(path, **opts).eval()  # biases edited by hand
    frozen = build(path, **opts).eval()  # pretrained biases
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        for i, blk in enumerate(edited.trunk.blocks):
            blk.attn.qkv.bias[64:] += plus.kv_bias.delta[i].flatten()
        # the block by hand, from timm's own modules: CVPT's three residual branches
        tokens, (h, w), _ = plus.embed(x)
        expected = []
        for i, (e, f) in enumerate(zip(edited.trunk.blocks, frozen.trunk.blocks)):
            tokens = tokens + e.ls1(e.attn(e.norm1(tokens)))
            tokens = tokens + plus.prompts.cross_attn(tokens, plus.prompts.get(i), f.attn)
            tokens = tokens + e.ls2(e.mlp(e.norm2(tokens)))
            expected.append(tokens[:, 1:].reshape(2, h, w, -1).permute(0, 3, 1, 2))
        for a, b in zip(plus(x), expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert (plus(x)[-1] - frozen(x)[-1]).abs().max() > 1e-3
    plus.train()
    before = {k: v.clone() for k, v in plus.trunk.state_dict().items()}
    assert {n for n, p in plus.named_parameters() if p.requires_grad} == {
        'prompts.tokens.0', 'prompts.tokens.1', 'prompts.tokens.2', 'kv_bias.delta'}
    sum(o.square().mean() for o in plus(x)).backward()
    assert plus.kv_bias.delta.grad.abs().sum() > 0
    torch.optim.SGD([plus.kv_bias.delta], lr=0.1).step()
    for k, v in plus.trunk.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_copied_model_shifts_by_its_own_deltas(tiny_trunk_file):
    """The K/V deltas reach the blocks through hooks: a deep copy (EMA, SWA, TTA wrappers) must
    use the copy's deltas, not the original's."""
    path, _ = tiny_trunk_file
    bb = build(path, type='DAVPTViT', num_prompts=2, num_guided_prompts=3, bias_tuning=True,
               prompt_dropout=0.0).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = bb(x)[-1].clone()
        twin = copy.deepcopy(bb)
        twin.kv_bias.delta.normal_()
        assert (twin(x)[-1] - before).abs().max() > 1e-3
        torch.testing.assert_close(bb(x)[-1], before, rtol=0, atol=0)


def test_checkpoints_from_before_the_composition_load_and_others_are_refused(tiny_trunk_file):
    """Records written before the layout gained ``bias_tuning`` / ``guided_blocks`` mean their
    defaults; a model with bias tuning still refuses such a checkpoint (it lacks the deltas)."""
    path, _ = tiny_trunk_file
    vpt = build(path, type='VPTDeepViT', num_prompts=2)
    state = vpt.state_dict()
    record = provenance.decode(state['provenance'], 'provenance')
    old = dict(record, layout={k: v for k, v in record['layout'].items()
                               if k not in ('bias_tuning', 'guided_blocks')})
    build(path, type='VPTDeepViT', num_prompts=2).load_state_dict(
        dict(state, provenance=provenance.encode(old)))
    with pytest.raises(TrunkWeightsError, match='no `kv_bias.delta`'):
        build(path, type='VPTDeepViT', num_prompts=2, bias_tuning=True).load_state_dict(
            dict(state, provenance=provenance.encode(old)), strict=False)


@pytest.mark.slow
def test_get_flops_counts_kv_bias_deltas(tmp_path):
    """mmengine's FlopAnalyzer traces the model with torch.jit: DA-VPT+ and CVPT+ must trace
    (their deltas once went through torch.func.functional_call, which a trace refuses)."""
    for method in ('DAVPTViT', 'CVPTViT'):
        cfg = write_linear_head_config(tmp_path / f'{method}.py', dict(
            TRUNK, type=method, bias_tuning=True, num_prompts=2))
        out = tmp_path / f'{method}.json'
        res = subprocess.run([sys.executable, osp.join(REPO, 'tools/analysis/get_flops.py'),
                              str(cfg), '--json', str(out)], cwd=tmp_path, capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        got = json.loads(out.read_text())
        guided = 20 if method == 'DAVPTViT' else 2  # DA-VPT's last block: num_guided_prompts
        prompts = (2 * 2 + guided) * 64
        assert got['parts']['backbone']['trainable'] == prompts + 3 * 2 * 64
        assert got['flops'] > 0
