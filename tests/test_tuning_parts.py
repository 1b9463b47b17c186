"""The tuning-part contract (tuning_part.py) and the parts beyond prompts: the block run step by
step against timm's own forward, LoRA against Hugging Face peft, AdaptFormer against a
transcription of its official code, and combinations of parts by configuration."""
import copy
import math
import os.path as osp
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS

from mmseg_prompt.models.backbones import CheckpointMismatchError, TrunkWeightsError
from mmseg_prompt.models.backbones.block_steps import run_block_steps

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRUNK = dict(model_name='vit_base_patch16_224', img_size=64, out_indices=(0, 1, 2),
             model_kwargs=dict(depth=3, embed_dim=64, num_heads=2))
LORA_ALL = dict(type='LoRA', rank=4, alpha=8, targets=('qkv', 'proj', 'fc1', 'fc2'))
ADAPTFORMER = dict(type='AdaptFormer', bottleneck=8, scale=0.1, dropout=0.0)


def build(trunk_file, **cfg):
    torch.manual_seed(0)
    return MODELS.build(dict(TRUNK, pretrained=str(trunk_file), **cfg))


def randomise(module, *names):
    """Trained-looking values in every tuned tensor whose name contains one of ``names``."""
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if p.requires_grad and any(k in n for k in names):
                p.normal_(0, 0.2)


@pytest.mark.parametrize('name, kwargs', [
    ('vit_base_patch16_224', dict(depth=2, embed_dim=64, num_heads=2)),
    ('vit_base_patch16_224', dict(depth=2, embed_dim=64, num_heads=2, qk_norm=True)),
    ('vit_base_patch16_224', dict(depth=2, embed_dim=64, num_heads=2, init_values=1e-2)),
    ('vit_base_patch16_224', dict(depth=2, embed_dim=64, num_heads=2, class_token=False,
                                  reg_tokens=4, global_pool='avg')),
    ('deit_tiny_patch16_224', dict(depth=2)),
    ('vit_base_patch16_224', dict(depth=2, embed_dim=64, num_heads=2, drop_path_rate=0.5,
                                  proj_drop_rate=0.2)),
])
def test_block_steps_equal_timm_block_forward(name, kwargs):
    """With no branch, the step-by-step run is timm's Block.forward, bit for bit (train mode
    too, from the same random state)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=32, **kwargs)
    x = torch.randn(2, 5, model.embed_dim)
    for train in (False, True):
        model.train(train)
        for block in model.blocks:
            with torch.random.fork_rng():
                torch.manual_seed(3)
                expected = block(x)
            with torch.random.fork_rng():
                torch.manual_seed(3)
                out, steps = run_block_steps(block, x)
            assert torch.equal(out, expected)
            assert torch.equal(steps.out, out) and torch.equal(steps.block_in, x)
    # and the branches add where they are said to
    block = model.blocks[0].eval()
    f, g = (lambda t: 0.5 * t), (lambda t: t.sin())
    y = x + block.ls1(block.attn(block.norm1(x)))
    y = y + f(y)
    by_hand = y + block.ls2(block.mlp(block.norm2(y))) + g(y)
    torch.testing.assert_close(run_block_steps(block, x, [f], [g])[0], by_hand)


def peft_trunk(bb, lora_cfg):
    """A fresh timm trunk with bb's weights, wrapped by peft's LoRA on the same layers with
    bb's A and B."""
    from peft import LoraConfig, inject_adapter_in_model
    trunk = timm.create_model(TRUNK['model_name'], num_classes=0, img_size=TRUNK['img_size'],
                              dynamic_img_size=True, dynamic_img_pad=True,
                              **TRUNK['model_kwargs'])
    trunk.load_state_dict(bb.trunk.state_dict())
    names = {'qkv': 'attn.qkv', 'proj': 'attn.proj', 'fc1': 'mlp.fc1', 'fc2': 'mlp.fc2'}
    config = LoraConfig(r=lora_cfg['rank'], lora_alpha=lora_cfg['alpha'], lora_dropout=0.0,
                        target_modules=r'blocks\.\d+\.(' + '|'.join(
                            names[t].replace('.', r'\.') for t in lora_cfg['targets']) + ')')
    trunk = inject_adapter_in_model(config, trunk)
    modules = dict(trunk.named_modules())
    with torch.no_grad():
        for i in range(len(trunk.blocks)):
            for t in lora_cfg['targets']:
                layer = modules[f'blocks.{i}.{names[t]}']
                layer.lora_A['default'].weight.copy_(bb.lora.lora_A[f'{i}_{t}'])
                layer.lora_B['default'].weight.copy_(bb.lora.lora_B[f'{i}_{t}'])
    return trunk.eval(), modules, names


def test_lora_equals_peft_lora_on_the_same_timm_vit(tiny_trunk_file):
    """Outputs and the gradients of A and B equal peft's LoRA wrapping the same timm ViT with
    the same A and B (s = alpha / r = 2), on the fused qkv, proj, fc1 and fc2 of every block."""
    path, _ = tiny_trunk_file
    bb = build(path, type='FrozenViT', parts=[LORA_ALL]).eval()
    assert bb.lora.scaling == 2.0
    randomise(bb, 'lora_')
    ref, modules, names = peft_trunk(bb, LORA_ALL)
    x = torch.randn(2, 3, 64, 48)
    ours = bb(x)
    theirs = ref.forward_intermediates(x, indices=[0, 1, 2], norm=False, output_fmt='NCHW',
                                       intermediates_only=True)
    weights = [torch.randn_like(o) for o in ours]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    sum((o * w).sum() for o, w in zip(ours, weights)).backward()
    sum((o * w).sum() for o, w in zip(theirs, weights)).backward()
    for i in range(3):
        for t in LORA_ALL['targets']:
            layer = modules[f'blocks.{i}.{names[t]}']
            for ab in ('A', 'B'):
                torch.testing.assert_close(getattr(bb.lora, f'lora_{ab}')[f'{i}_{t}'].grad,
                                           getattr(layer, f'lora_{ab}')['default'].weight.grad,
                                           rtol=1e-4, atol=1e-4)
    # B starts at zero: before training, LoRA is the trunk exactly
    fresh = build(path, type='FrozenViT', parts=[LORA_ALL]).eval()
    plain = build(path, type='FrozenViT').eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(fresh(x), plain(x)))
        assert (ours[-1] - plain(x)[-1]).abs().max() > 1e-3


def test_lora_on_q_and_v_equals_edited_projection_weights(tiny_trunk_file):
    """targets=('v', 'q'): their own A and B each, on the q and v thirds of the fused qkv
    output; equal to a trunk whose W_q and W_v have s B A added by hand (and what merge_into
    writes)."""
    path, _ = tiny_trunk_file
    bb = build(path, type='FrozenViT', parts=[dict(type='LoRA', rank=2, alpha=3,
                                                   targets=('v', 'q'))]).eval()
    assert sorted(bb.lora.lora_A) == ['0_q', '0_v', '1_q', '1_v', '2_q', '2_v']
    randomise(bb, 'lora_')
    edited = build(path, type='FrozenViT').eval()
    with torch.no_grad():
        for i, blk in enumerate(edited.trunk.blocks):
            for t, rows in (('q', slice(0, 64)), ('v', slice(128, 192))):
                a, b = bb.lora.lora_A[f'{i}_{t}'], bb.lora.lora_B[f'{i}_{t}']
                blk.attn.qkv.weight[rows] += 1.5 * b @ a
        x = torch.randn(2, 3, 48, 64)
        for a, b in zip(bb(x), edited(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        merged = copy.deepcopy(bb)
        merged.lora.merge_into(merged.trunk)
        with merged.tuning_disabled():
            for a, b in zip(merged(x), edited(x)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def official_adaptformer_block(block, down, up, scale, x):
    """AdaptFormer's official Block.forward (models/custom_modules.py, ffn_option='parallel',
    adapter layernorm 'none', eval), transcribed over timm's block members."""
    x = x + block.drop_path1(block.attn(block.norm1(x)))
    adapt_x = F.linear(F.relu(F.linear(x, *down)), *up) * scale
    residual = x
    x = block.drop_path2(block.mlp(block.norm2(x)))
    x = x + adapt_x
    return residual + x


def test_adaptformer_equals_the_official_formula(tiny_trunk_file):
    """Every block with AdaptFormer equals the official parallel adapter's forward; at init
    (zero up-projection) it is the trunk exactly; only the adapters train."""
    path, _ = tiny_trunk_file
    x = torch.randn(2, 3, 64, 48)
    plain = build(path, type='FrozenViT').eval()
    bb = build(path, type='FrozenViT', parts=[ADAPTFORMER]).eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(bb(x), plain(x)))
    randomise(bb, 'adapters')
    with torch.no_grad():
        tokens, (h, w), _ = bb.embed(x)
        for i, blk in enumerate(bb.trunk.blocks):
            a = bb.adaptformer.adapters[str(i)]
            tokens = official_adaptformer_block(blk, (a.down.weight, a.down.bias),
                                                (a.up.weight, a.up.bias), 0.1, tokens)
        expected = tokens[:, 1:].reshape(2, h, w, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(bb(x)[-1], expected, rtol=1e-5, atol=1e-5)
        assert (bb(x)[-1] - plain(x)[-1]).abs().max() > 1e-3
    tuned = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert tuned == {f'adaptformer.adapters.{i}.{m}.{t}' for i in range(3)
                     for m in ('down', 'up') for t in ('weight', 'bias')}
    assert sum(bb.state_dict()[n].numel() for n in tuned) == 3 * (64 * 8 + 8 + 8 * 64 + 64)
    # dropout acts on the hidden units in training only
    drop = build(path, type='FrozenViT', parts=[dict(ADAPTFORMER, dropout=0.5)])
    randomise(drop, 'adapters')
    with torch.no_grad():
        assert not torch.equal(drop.train()(x)[-1], drop.eval()(x)[-1])


def test_vpt_deep_with_lora_and_cvpt_with_adaptformer_combine_by_configuration(
        tiny_trunk_file):
    """Parts combine by configuration: VPT-Deep over LoRA equals VPT-Deep over the trunk with
    LoRA's s B A added to its weights; CVPT beside AdaptFormer equals the step-by-step block
    with both branches by hand."""
    path, _ = tiny_trunk_file
    x = torch.randn(2, 3, 48, 64)
    lora = dict(type='LoRA', rank=2, targets=('qkv', 'fc2'))
    both = build(path, type='VPTDeepViT', num_prompts=3, prompt_dropout=0.0,
                 parts=[lora]).eval()
    randomise(both, 'lora_', 'prompts')
    vpt = build(path, type='VPTDeepViT', num_prompts=3, prompt_dropout=0.0).eval()
    vpt.prompts.load_state_dict(both.prompts.state_dict())
    with torch.no_grad():
        for i, blk in enumerate(vpt.trunk.blocks):
            for t, layer in (('qkv', blk.attn.qkv), ('fc2', blk.mlp.fc2)):
                layer.weight += both.lora.lora_B[f'{i}_{t}'] @ both.lora.lora_A[f'{i}_{t}']
        for a, b in zip(both(x), vpt(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    cvpt = build(path, type='CVPTViT', num_prompts=2, prompt_dropout=0.0, cross_proj_drop=0.0,
                 parts=[ADAPTFORMER]).eval()
    randomise(cvpt, 'adapters', 'prompts')
    with torch.no_grad():
        tokens, (h, w), _ = cvpt.embed(x)
        for i, blk in enumerate(cvpt.trunk.blocks):
            a = cvpt.adaptformer.adapters[str(i)]
            y = tokens + blk.attn(blk.norm1(tokens))
            y = y + cvpt.prompts.cross_attn(y, cvpt.prompts.get(i), blk.attn)
            adapter = F.linear(F.relu(F.linear(y, a.down.weight, a.down.bias)), a.up.weight,
                               a.up.bias) * 0.1
            tokens = y + blk.mlp(blk.norm2(y)) + adapter
        expected = tokens[:, 1:].reshape(2, h, w, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(cvpt(x)[-1], expected, rtol=1e-5, atol=1e-5)
    assert set(cvpt.part_names) == {'prompts', 'adaptformer'}
    assert cvpt.parts_record()['adaptformer'] == dict(
        type='AdaptFormer', layout=dict(bottleneck=8, scale=0.1, blocks=[0, 1, 2]))


def test_tuning_disabled_switches_every_part_off(tiny_trunk_file):
    """Inside tuning_disabled() the backbone is the plain frozen trunk, hooks included (the
    DA-VPT mapping hook relies on it); outside, the parts act again."""
    path, _ = tiny_trunk_file
    bb = build(path, type='CVPTViT', num_prompts=2, bias_tuning=True,
               parts=[dict(type='LoRA', rank=2), ADAPTFORMER]).eval()
    randomise(bb, 'lora_', 'adapters', 'prompts', 'kv_bias')
    plain = build(path, type='FrozenViT').eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        tuned = bb(x)[-1]
        with bb.tuning_disabled():
            assert all(torch.equal(a, b) for a, b in zip(bb(x), plain(x)))
        assert torch.equal(bb(x)[-1], tuned) and (tuned - plain(x)[-1]).abs().max() > 1e-3


def test_composition_rules_are_checked(tiny_trunk_file):
    """Two parts of one kind, two sequence parts, or something that is not a part are refused
    with the key to fix; one of each kind builds."""
    path, _ = tiny_trunk_file
    build(path, type='FrozenViT', prompts=dict(type='SequencePrompts', num_prompts=2),
          parts=[dict(type='LoRA'), ADAPTFORMER], bias_tuning=True)
    with pytest.raises(ValueError, match="two tuning parts are named 'prompts'"):
        build(path, type='FrozenViT', prompts=dict(type='SequencePrompts'),
              parts=[dict(type='CrossAttentionPrompts')])
    with pytest.raises(ValueError, match="two tuning parts are named 'lora'"):
        build(path, type='FrozenViT', parts=[dict(type='LoRA'), dict(type='LoRA', rank=2)])
    with pytest.raises(TypeError, match="'FCNHead' is not a registered tuning part"):
        build(path, type='FrozenViT', parts=[dict(type='FCNHead')])
    with pytest.raises(ValueError, match='either "qkv"'):
        build(path, type='FrozenViT', parts=[dict(type='LoRA', targets=('qkv', 'q'))])


def test_lora_checkpoints_refuse_another_layout_and_old_bias_keys_load(tiny_trunk_file,
                                                                       tmp_path):
    """A LoRA checkpoint loads into its own config and is refused by another rank (shapes)
    or another alpha (same shapes, another meaning: the provenance layout); a checkpoint from
    before the K/V deltas became a part (`backbone.kv_bias_delta`) still loads."""
    path, _ = tiny_trunk_file
    bb = build(path, type='FrozenViT', parts=[dict(type='LoRA', rank=2)])
    randomise(bb, 'lora_')
    state = bb.state_dict()
    assert {k for k in state if k.startswith('lora.')} == {
        f'lora.lora_{ab}.{i}_{t}' for ab in 'AB' for i in range(3) for t in 'qv'}
    same = build(path, type='FrozenViT', parts=[dict(type='LoRA', rank=2)])
    same.load_state_dict(state)
    assert torch.equal(same.lora.lora_B['1_v'], bb.lora.lora_B['1_v'])
    with pytest.raises(TrunkWeightsError, match=r'`lora.lora_A.0_q` has shape'):
        build(path, type='FrozenViT', parts=[dict(type='LoRA', rank=4)]).load_state_dict(state)
    with pytest.raises(CheckpointMismatchError,
                       match='LoRA `lora` alpha: 2.0 in the checkpoint, 4.0 in this config'):
        build(path, type='FrozenViT', parts=[dict(type='LoRA', rank=2, alpha=4)]
              ).load_state_dict(state)

    old = build(path, type='VPTDeepViT', num_prompts=2, bias_tuning=True)
    randomise(old, 'kv_bias')
    legacy = {('kv_bias_delta' if k == 'kv_bias.delta' else k): v
              for k, v in old.state_dict().items()}
    assert 'kv_bias_delta' in legacy
    new = build(path, type='VPTDeepViT', num_prompts=2, bias_tuning=True)
    new.load_state_dict(legacy)
    assert torch.equal(new.kv_bias.delta, old.kv_bias.delta)


def test_parts_declare_which_tensors_take_no_weight_decay(tiny_trunk_file):
    """The optimizer gives the prompt tokens (declared no-decay) none and LoRA's, AdaptFormer's
    and the bias deltas' tensors the configured decay."""
    path, _ = tiny_trunk_file
    bb = build(path, type='VPTDeepViT', num_prompts=2, bias_tuning=True,
               parts=[dict(type='LoRA', rank=2), ADAPTFORMER])
    wrapper = build_optim_wrapper(bb, dict(
        type='OptimWrapper', constructor='PromptOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)))
    names = {id(p): n for n, p in bb.named_parameters()}
    decay = {names[id(p)]: g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    assert decay.keys() == {n for n, p in bb.named_parameters() if p.requires_grad}
    for name, wd in decay.items():
        assert wd == (0.0 if name.startswith('prompts.') else 0.05), name
    assert math.isclose(sum(1 for n in decay if n.startswith('prompts.')), 3)


def with_test_pipeline(cfg):
    """The config file ``cfg`` plus the test pipeline mmseg's inference_model needs."""
    with open(cfg, 'a') as f:
        f.write("test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]\n")
    return cfg


@pytest.mark.slow  # runs tools/export_full_checkpoint.py in a subprocess
def test_export_merges_lora_and_bias_deltas_and_the_merged_model_predicts_the_same(
        tmp_path, tiny_trunk_file):
    """`export_full_checkpoint.py --merge` folds LoRA and the K/V deltas into the trunk, keeps
    AdaptFormer as a part, writes the config without the merged parts; mmseg's init_model and
    inference_model on the merged files predict what the unmerged model predicts, and the
    merged checkpoint is refused by the unmerged config."""
    import numpy as np
    from mmseg.apis import inference_model, init_model

    from mmseg_prompt.testing import write_linear_head_config
    path, _ = tiny_trunk_file
    backbone = dict(TRUNK, type='FrozenViT', pretrained=str(path), bias_tuning=True,
                    parts=[dict(type='LoRA', rank=2, targets=('qkv', 'fc1')), ADAPTFORMER])
    cfg = with_test_pipeline(write_linear_head_config(tmp_path / 'lora.py', backbone))
    model = init_model(str(cfg), device='cpu')
    randomise(model, 'lora_', 'adapters', 'kv_bias', 'decode_head')
    torch.save(dict(meta={}, state_dict=model.state_dict()), tmp_path / 'tuned.pth')
    res = subprocess.run([sys.executable, f'{REPO}/tools/export_full_checkpoint.py', str(cfg),
                          str(tmp_path / 'tuned.pth'), str(tmp_path / 'merged.pth'), '--merge'],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "merged into the trunk's weights: K/V bias tuning, LoRA" in res.stdout
    img = np.random.RandomState(0).randint(0, 255, (64, 48, 3)).astype(np.uint8)
    unmerged = init_model(str(cfg), str(tmp_path / 'tuned.pth'), device='cpu')
    merged = init_model(str(tmp_path / 'merged.py'), str(tmp_path / 'merged.pth'), device='cpu')
    assert merged.backbone.part_names == ('adaptformer',) and not merged.backbone.bias_tuning
    a = inference_model(unmerged, img).seg_logits.data
    b = inference_model(merged, img).seg_logits.data
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    plain = init_model(str(with_test_pipeline(write_linear_head_config(
        tmp_path / 'plain.py', dict(TRUNK, type='FrozenViT', pretrained=str(path))))),
        device='cpu')
    assert (inference_model(plain, img).seg_logits.data - a).abs().max() > 1e-3
    with pytest.raises(TrunkWeightsError, match='no `backbone.kv_bias.delta`'):
        init_model(str(cfg), str(tmp_path / 'merged.pth'), device='cpu')


def test_merge_is_refused_beside_a_part_that_reads_the_trunk_tensors(tmp_path, tiny_trunk_file):
    """CVPT's cross-attention reads each block's qkv and proj tensors directly, beside the hooks:
    folding the K/V deltas into them would change it, so the export tool refuses; the same
    deltas beside VPT-Deep merge."""
    import importlib.util

    from mmengine.config import Config

    from mmseg_prompt.testing import write_linear_head_config
    spec = importlib.util.spec_from_file_location('export_tool',
                                                  f'{REPO}/tools/export_full_checkpoint.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    path, _ = tiny_trunk_file
    for method, refused in (('CVPTViT', True), ('VPTDeepViT', False)):
        cfg = Config.fromfile(write_linear_head_config(tmp_path / f'{method}.py', dict(
            TRUNK, type=method, num_prompts=2, bias_tuning=True, pretrained=str(path))))
        model = MODELS.build(cfg.model)
        if refused:
            with pytest.raises(SystemExit, match='CVPT computes with the trunk.s attention '
                                                 'tensors directly.*K/V bias tuning'):
                tool.merge_parts(model, cfg)
        else:
            merged, merged_cfg = tool.merge_parts(model, cfg)
            assert not merged.backbone.bias_tuning and merged.backbone.part_names == ('prompts',)


def test_optimizer_log_gives_the_tuning_parts_and_the_heads_separately(tiny_trunk_file,
                                                                      monkeypatch):
    """The trainable-parameter log splits the tuning parts (by part) from the neck and heads,
    with the counts computed by hand."""
    import mmseg_prompt.engine.optim_constructor as oc
    from mmseg_prompt.testing import write_linear_head_config
    path, _ = tiny_trunk_file
    said = []
    monkeypatch.setattr(oc, 'print_log', lambda msg, **kw: said.append(msg))
    cfg = write_linear_head_config(path.parent / 'cfg.py', dict(
        TRUNK, type='VPTDeepViT', pretrained=str(path), num_prompts=2,
        parts=[dict(type='LoRA', rank=2)]))
    from mmengine.config import Config
    model = MODELS.build(Config.fromfile(cfg).model)
    build_optim_wrapper(model, dict(type='OptimWrapper',
                                    constructor='PromptOptimWrapperConstructor',
                                    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)))
    prompts, lora, head = 3 * 2 * 64, 3 * 2 * 2 * (64 + 64), 64 * 5 + 5
    assert said[-1].startswith(
        f'optimizer: {3 + 12 + 2} trainable tensors ({prompts + lora + head:,} params): tuning '
        f'parts {prompts + lora:,} (backbone.prompts {prompts:,}, backbone.lora {lora:,}); neck '
        f'and heads {head:,} (decode_head {head:,}); ')
