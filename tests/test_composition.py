"""The tuning parts combine by configuration over the one frozen-trunk base (docs/methods.md,
"Composition"): prompt parts built from a sub-config, K/V bias deltas on any of them, and the
registered method names as those combinations."""
import contextlib
import copy
import io
import logging
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_prompt.models.backbones import CheckpointMismatchError, TrunkWeightsError, provenance
from mmseg_prompt.models.backbones.tuning_part import TuningPart
from mmseg_prompt.testing import write_linear_head_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRUNK = dict(model_name='vit_base_patch16_224', img_size=64, out_indices=(0, 1, 2),
             model_kwargs=dict(depth=3, embed_dim=64, num_heads=2))


@contextlib.contextmanager
def _captured_log():
    """What mmengine's current logger prints, captured."""
    from mmengine.logging import MMLogger
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


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
    """Each method name builds the same weights, parts and outputs as FrozenViT with the part's
    sub-config; so one's checkpoint is another's, provenance included, both ways."""
    path, _ = tiny_trunk_file
    named = build(path, **method).eval()
    composed = build(path, type='FrozenViT', prompts=part,
                     bias_tuning=method.get('bias_tuning', False)).eval()
    assert named.state_dict().keys() == composed.state_dict().keys()
    with torch.no_grad():
        for k, v in named.state_dict(keep_vars=True).items():
            if k != 'provenance':
                v.normal_()  # trained-looking values, bias deltas included
    assert named.parts_record() == composed.parts_record()
    assert named.weights_layout() == composed.weights_layout()
    composed.load_state_dict(named.state_dict())  # the named one's record, as saved
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        for a, b in zip(named(x), composed(x)):
            torch.testing.assert_close(a, b)
        plain = build(path, type='FrozenViT').eval()(x)
        assert (named(x)[-1] - plain[-1]).abs().max() > 1e-3  # the part does act
    build(path, **method).load_state_dict(composed.state_dict())  # and the other way


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


def format1(state, backbone, **layout):
    """``state`` with a provenance record as mmseg-prompt wrote it before it recorded the parts
    (format 1: the backbone's class name, every part's options in one flat layout)."""
    record = provenance.decode(state['provenance'], 'provenance')
    old = dict(format=1, backbone=backbone, model_name=record['model_name'],
               img_size=record['img_size'], trunk=record['trunk'],
               layout=dict(out_indices=[0, 1, 2], final_norm=False, **layout))
    return dict(state, provenance=provenance.encode(old))


def test_format1_checkpoints_load_into_every_spelling_and_others_are_refused(tiny_trunk_file):
    """Records written before the parts were recorded (format 1) load into the combination they
    describe, however it is spelled now; records older still, before the layout gained
    ``bias_tuning`` / ``guided_blocks``, mean their defaults."""
    path, _ = tiny_trunk_file
    state = build(path, type='VPTDeepViT', num_prompts=2).state_dict()
    for layout in (dict(num_prompts=[2, 2, 2], guided_blocks=[], bias_tuning=False),
                   dict(num_prompts=[2, 2, 2])):  # before guided_blocks and bias_tuning
        old = format1(state, 'VPTDeepViT', **layout)
        build(path, type='VPTDeepViT', num_prompts=2).load_state_dict(old)
        build(path, type='FrozenViT', prompts=dict(type='SequencePrompts', num_prompts=2)
              ).load_state_dict(old)
    with pytest.raises(CheckpointMismatchError,
                       match=r'SequencePrompts `prompts` num_prompts: \[2, 2, 2\] in the '
                             r'checkpoint, \[3, 3, 3\] in this config'):
        build(path, type='VPTDeepViT', num_prompts=3).load_state_dict(format1(
            build(path, type='VPTDeepViT', num_prompts=3).state_dict(), 'VPTDeepViT',
            num_prompts=[2, 2, 2]))
    with pytest.raises(CheckpointMismatchError,
                       match='a SequencePrompts part in the checkpoint, a CrossAttentionPrompts'):
        build(path, type='CVPTViT', num_prompts=2).load_state_dict(
            format1(state, 'VPTDeepViT', num_prompts=[2, 2, 2]))
    with pytest.raises(TrunkWeightsError, match='no `kv_bias.delta`'):
        build(path, type='VPTDeepViT', num_prompts=2, bias_tuning=True).load_state_dict(
            format1(state, 'VPTDeepViT', num_prompts=[2, 2, 2]), strict=False)
    # a format-1 FrozenViT record does not say which prompt part it had: loaded with a warning
    old = format1(state, 'FrozenViT', num_prompts=[2, 2, 2], guided_blocks=[])
    with _captured_log() as log:
        build(path, type='FrozenViT', prompts=dict(type='SequencePrompts', num_prompts=2)
              ).load_state_dict(old)
    assert 'does not say which prompt part `backbone.prompts` is' in log.getvalue()


def test_format1_adapter_layouts_load_and_their_options_are_checked(tiny_trunk_file):
    """Format 1 nested LoRA's and AdaptFormer's options under their names; they now are parts."""
    path, _ = tiny_trunk_file
    parts = [dict(type='LoRA', rank=2, blocks=[0, 1]), dict(type='AdaptFormer', bottleneck=4)]
    state = build(path, type='FrozenViT', parts=parts).state_dict()
    lora = dict(rank=2, alpha=2.0, targets=['q', 'v'], blocks=[0, 1])
    adapter = dict(bottleneck=4, scale=0.1, blocks=[0, 1, 2])
    record = build(path, type='FrozenViT', parts=parts).parts_record()
    assert record == dict(lora=dict(type='LoRA', layout=lora),
                          adaptformer=dict(type='AdaptFormer', layout=adapter))
    old = format1(state, 'FrozenViT', lora=lora, adaptformer=adapter)
    build(path, type='FrozenViT', parts=parts[::-1]).load_state_dict(old)  # any order
    with pytest.raises(CheckpointMismatchError, match=r'LoRA `lora` alpha: 2.0 in the checkpoint'
                                                      r', 4.0 in this config'):
        build(path, type='FrozenViT', parts=[dict(parts[0], alpha=4.0), parts[1]]
              ).load_state_dict(old)


class ScaledDelta(TuningPart):
    """A throwaway part with a ``scale`` option that does not change its tensors' shapes."""
    NAME = 'scaled_a'

    def __init__(self, embed_dim: int, depth: int, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.delta = torch.nn.Parameter(torch.zeros(embed_dim))

    def weights_layout(self) -> dict:
        return dict(scale=self.scale)


class OtherScaledDelta(ScaledDelta):
    NAME = 'scaled_b'


def test_each_part_records_its_options_under_its_name(tiny_trunk_file):
    """Two parts with an option of the same name keep both: a checkpoint whose first part's
    ``scale`` differs is refused although the second part's is the same (one flat layout let the
    later part's ``scale`` hide the earlier one's)."""
    path, _ = tiny_trunk_file

    def parts(a, b):
        return [dict(type=ScaledDelta, scale=a), dict(type=OtherScaledDelta, scale=b)]

    state = build(path, type='FrozenViT', parts=parts(1.0, 2.0)).state_dict()
    with pytest.raises(CheckpointMismatchError,
                       match=r'ScaledDelta `scaled_a` scale: 1.0 in the checkpoint, 2.0 in this'):
        build(path, type='FrozenViT', parts=parts(2.0, 2.0)).load_state_dict(state)
    build(path, type='FrozenViT', parts=parts(1.0, 2.0)[::-1]).load_state_dict(state)


def test_a_part_name_the_backbone_uses_is_refused(tiny_trunk_file):
    """A part's NAME is its attribute and state-dict prefix: one FrozenViT already has is
    refused at build, like a second part of one kind."""
    from mmseg_prompt.models.backbones.kv_bias_deltas import KVBiasDeltas
    path, _ = tiny_trunk_file

    class Clash(KVBiasDeltas):
        NAME = 'trunk'

    with pytest.raises(ValueError, match="Clash.NAME = 'trunk'"):
        build(path, type='FrozenViT', parts=[dict(type=Clash)])
    with pytest.raises(ValueError, match="two tuning parts are named 'kv_bias'"):
        build(path, type='FrozenViT', bias_tuning=True, parts=[dict(type='KVBiasDeltas')])
    build(path, type='FrozenViT', parts=[dict(type='KVBiasDeltas')])  # once is fine


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
