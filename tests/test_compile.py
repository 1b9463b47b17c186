"""torch.compile: every backbone traces as one graph (training with its dropouts, and eval), the
compiled forward and backward agree with eager, RandomBitsDropout keeps 1 - p when compiled, and
tools/train.py --compile trains."""
import importlib.util
import logging
import os.path as osp
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch
from mmengine.logging import MMLogger
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models.utils import RandomBitsDropout, random_bits_keep_mask
from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME, TINY_ROPE_KWARGS, TINY_ROPE_NAME

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRUNK = dict(TINY_KWARGS, depth=2)  # two blocks: compile time grows with the graph

# The configs' dropouts (0.1); CVPT in both cross-attention forms.
DROP = dict(prompt_dropout=0.1)
CASES = {
    'FrozenViT': dict(type='FrozenViT'),
    'VPTDeepViT': dict(type='VPTDeepViT', num_prompts=4, **DROP),
    'CVPT-folded': dict(type='CVPTViT', num_prompts=4, cross_attn_fold='always',
                        cross_proj_drop=0.1, **DROP),
    'CVPT-plain': dict(type='CVPTViT', num_prompts=4, cross_attn_fold='never',
                       cross_proj_drop=0.1, **DROP),
    # prompts shared by the batch in training: no prompt dropout, output dropout on
    'CVPT-folded-shared': dict(type='CVPTViT', num_prompts=4, cross_attn_fold='always',
                               cross_proj_drop=0.1, prompt_dropout=0.0),
    'CVPT-plain-shared': dict(type='CVPTViT', num_prompts=4, cross_attn_fold='never',
                              cross_proj_drop=0.1, prompt_dropout=0.0),
    'CVPT-guided': dict(type='CVPTViT', num_prompts=4, guided_blocks=(1,), cross_proj_drop=0.1,
                        **DROP),
    'DAVPT': dict(type='DAVPTViT', num_prompts=4, num_guided_prompts=5, **DROP),
    'DAVPT+': dict(type='DAVPTViT', num_prompts=4, num_guided_prompts=5, bias_tuning=True,
                   **DROP),
    # without MetricGuidedEncoderDecoder: it warns once, outside the traced forward
    'DAVPT-unguided': dict(type='DAVPTViT', num_prompts=4, num_guided_prompts=5, **DROP),
    # the trunk stored in bfloat16: its forward enters bfloat16 autocast itself
    'CVPT-plain-bf16-trunk': dict(type='CVPTViT', num_prompts=4, cross_attn_fold='never',
                                  cross_proj_drop=0.1, trunk_dtype='bfloat16', **DROP),
}
# the same on a DINOv3 (Eva, RoPE) trunk, and the adapters
DINOV3 = dict(model_name=TINY_ROPE_NAME, model_kwargs=dict(TINY_ROPE_KWARGS, depth=2))
CASES.update({
    'DINOv3-FrozenViT': dict(type='FrozenViT', **DINOV3),
    'DINOv3-VPTDeepViT': dict(CASES['VPTDeepViT'], **DINOV3),
    'DINOv3-CVPT-folded': dict(CASES['CVPT-folded'], **DINOV3),
    'DINOv3-CVPT-plain': dict(CASES['CVPT-plain'], **DINOV3),
    'DINOv3-DAVPT+': dict(CASES['DAVPT+'], **DINOV3),
    'DINOv3-LoRA-AdaptFormer': dict(type='FrozenViT', parts=[
        dict(type='LoRA', rank=2), dict(type='AdaptFormer', bottleneck=4)], **DINOV3),
    # BitFit's hook on every module with a bias (the q/v biases' on the fused qkv), with VPT-Deep
    'DINOv3-VPT-BitFit': dict(CASES['VPTDeepViT'], parts=[dict(type='BitFit')], **DINOV3),
    'DINOv3-CVPT-plain-bf16-trunk': dict(CASES['CVPT-plain-bf16-trunk'], **DINOV3),
})
# in eval mode the prompts are shared and the guidance flag is not read: these add nothing there
EVAL_CASES = [c for c in CASES if not c.endswith(('-shared', '-unguided'))]


@contextmanager
def logged_messages():
    """The messages logged through mmengine's current logger inside the block."""
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield logged
    finally:
        logger.removeHandler(handler)


def build(case: str, device: str, **kw) -> torch.nn.Module:
    cfg = dict(model_name=TINY_NAME, img_size=64, model_kwargs=TRUNK, out_indices=(0, 1))
    cfg.update(CASES[case], **kw)
    return MODELS.build(cfg).to(device)


def guided_forward(bb: torch.nn.Module):
    """What MetricGuidedEncoderDecoder runs: the forward that also returns the guided features."""
    return bb.forward_guided if bb.guided_blocks else bb


@pytest.mark.parametrize('case, mode', [(c, m) for c in CASES for m in ('train', 'eval')
                                        if m == 'train' or c in EVAL_CASES])
def test_backbone_compiles_without_graph_breaks(case, mode, device):
    x = torch.randn(2, 3, 64, 48, device=device)
    torch.compiler.reset()
    # a fresh model's first call, as one graph (a first-call-only side effect would break it)
    bb = build(case, device).train(mode == 'train')
    fn = bb if case.endswith('-unguided') else guided_forward(bb)
    try:
        torch.compile(fn, backend='eager', fullgraph=True)(x)
    except Exception as e:  # noqa: BLE001  (the message names the break)
        pytest.fail(f'{case} ({mode}) does not compile as one graph: {e}')
    bb = build(case, device).train(mode == 'train')
    fn = bb if case.endswith('-unguided') else guided_forward(bb)
    explained = torch._dynamo.explain(fn)(x)
    reasons = [r.reason.splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_break_count == 0, f'{case} ({mode}): {reasons}'
    assert explained.graph_count == 1


def test_unguided_davpt_warns_once_and_never_inside_a_compiled_forward():
    """DA-VPT trained through the plain forward (no MetricGuidedEncoderDecoder, which runs
    ``forward_guided``) warns once, at the first eager training forward; a compiled forward skips
    it (logging would break the graph); the guided forward and eval never warn."""
    x = torch.randn(1, 3, 32, 32)
    with logged_messages() as logged:
        def warnings():
            return [m for m in logged if 'training without metric guidance' in m]
        bb = build('DAVPT-unguided', 'cpu')  # in training mode, train() never called
        torch.compiler.reset()
        torch.compile(bb, backend='eager', fullgraph=True)(x)
        assert warnings() == []
        bb(x)
        bb(x)
        assert len(warnings()) == 1
        build('DAVPT-unguided', 'cpu').train()(x)
        assert len(warnings()) == 2
        build('DAVPT', 'cpu').train().forward_guided(x)  # guided: no warning
        build('DAVPT-unguided', 'cpu').eval()(x)
        assert len(warnings()) == 2


@pytest.mark.parametrize('case', ['VPTDeepViT', 'CVPT-guided', 'DAVPT+'])
def test_a_block_compiles_alone_with_a_symbolic_index(case):
    """forward_block as its own frame with the block index a symbolic int, as dynamo makes it
    when a graph break upstream splits the forward: the prompt lookup must not need str(index)."""
    bb = build(case, 'cpu', num_prompts=[0, 3], prompt_dropout=0.0, **(
        dict(cross_proj_drop=0.0) if 'CVPT' in case else {})).train()
    torch.compiler.reset()
    block_fn = torch.compile(bb.forward_block, backend='eager', fullgraph=True, dynamic=True)
    x = torch.randn(2, 13, 64)
    for i, block in enumerate(bb.trunk.blocks):
        torch.testing.assert_close(block_fn(i, block, x), bb.forward_block(i, block, x))


def outputs_and_grads(bb, x, fn):
    """Outputs of ``fn(x)`` and the gradients of the trainable tensors after a backward."""
    outs = fn(x)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o)).sum()
               for o in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in bb.named_parameters() if p.requires_grad}
    bb.zero_grad(set_to_none=True)
    return [o.detach() for o in outs], grads


@pytest.mark.parametrize('case, backend', [pytest.param('CVPT-folded', 'inductor',
                                                        marks=pytest.mark.slow),  # ~20 s on CPU
                                           ('CVPT-plain', 'aot_eager'),
                                           ('VPTDeepViT', 'aot_eager'),
                                           ('DAVPT+', 'aot_eager'),
                                           ('DINOv3-CVPT-folded', 'aot_eager'),
                                           ('DINOv3-DAVPT+', 'aot_eager'),
                                           ('DINOv3-VPT-BitFit', 'aot_eager')])
def test_compiled_forward_and_gradients_equal_eager(case, backend, device):
    """Training mode with the dropouts off (both runs deterministic): the same outputs and the
    same gradients of the prompts (and DA-VPT+'s K/V bias deltas)."""
    torch.manual_seed(0)
    bb = build(case, device, prompt_dropout=0.0, **(
        dict(cross_proj_drop=0.0) if 'CVPT' in case else {})).train()
    with torch.no_grad():  # tuned tensors as large as trained ones, so every term matters
        for p in bb.parameters():
            if p.requires_grad:
                p.normal_()
    x = torch.randn(2, 3, 64, 48, device=device)
    torch.compiler.reset()
    eager, eager_grads = outputs_and_grads(bb, x, bb)
    compiled, compiled_grads = outputs_and_grads(bb, x, torch.compile(bb, backend=backend))
    tol = dict(atol=1e-4, rtol=1e-4)  # float32; inductor reorders reductions
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, **tol)
    assert compiled_grads.keys() == eager_grads.keys() and len(eager_grads) >= 2
    for name, g in eager_grads.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(compiled_grads[name], g, **tol, msg=lambda m: f'{name}: {m}')


@pytest.mark.slow  # an inductor compile: about 15 s on 2 CPU cores
def test_compiled_dropout_keeps_one_minus_p_and_eager_keeps_its_random_bits(device):
    """Compiled, RandomBitsDropout is F.dropout (inductor draws the masks): keep rate 1 - p and
    scale 1 / (1 - p). Eager on CPU it still draws the masks from 16 random bits."""
    p, n = 0.3, 1 << 20
    drop = RandomBitsDropout(p).train()
    x = torch.ones(n, device=device)
    compiled = torch.compile(lambda t: drop(t * 2.0) * 0.5)  # inside a compiled function
    torch.compiler.reset()
    a, b = compiled(x), compiled(x)
    sigma = (p * (1 - p) / n) ** 0.5
    for out in (a, b):
        kept = out != 0
        assert abs(kept.double().mean().item() - (1 - p)) < 5 * sigma
        torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    assert not torch.equal(a != 0, b != 0)  # a new mask per call
    if device == 'cpu':
        torch.manual_seed(5)
        expected = random_bits_keep_mask((n,), p)
        torch.manual_seed(5)
        assert torch.equal(drop(x) != 0, expected)


def test_optimizer_parameter_groups_are_plain_dicts():
    """mmengine's constructor leaves ConfigDict groups, on which dynamo fails when it traces the
    optimizer step of a compiled train_step; ours hands plain dicts, as a resume would."""
    from mmengine.config import ConfigDict
    from mmengine.optim import build_optim_wrapper
    bb = build('CVPT-folded', 'cpu')
    wrapper = build_optim_wrapper(bb, ConfigDict(
        type='OptimWrapper', constructor='PromptOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        paramwise_cfg=dict(prompt_decay_mult=0.0, norm_decay_mult=0.0)))
    groups = wrapper.optimizer.param_groups
    assert groups and all(type(g) is dict for g in groups)
    assert sum(len(g['params']) for g in groups) == len(bb.prompts.tokens)


@pytest.mark.slow  # about 2.5 minutes on 2 CPU cores with a cold inductor cache
def test_train_tool_compile_flag_trains_a_compiled_step(tmp_path):
    """tools/train.py --compile on the example config: the Runner compiles train_step (inductor)
    and two iterations run (the second recompiles for new input sizes and learning rate)."""
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    config = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')
    data_root = make_synthetic_ade20k(tmp_path / 'ade', num_train=4, num_val=1, seed=1)
    save_random_trunk(Config.fromfile(config).model.backbone, tmp_path / 'trunk.pth', seed=0)
    res = subprocess.run(
        [sys.executable, f'{REPO}/tools/train.py', config, '--compile', '--work-dir',
         str(tmp_path / 'work'), '--cfg-options', f'model.backbone.pretrained={tmp_path}/trunk.pth',
         f'train_dataloader.dataset.data_root={data_root}',
         f'test_dataloader.dataset.data_root={data_root}', 'train_dataloader.batch_size=2',
         'train_dataloader.num_workers=0', 'train_cfg.max_iters=2', 'val_cfg=None',
         'val_dataloader=None', 'val_evaluator=None', 'default_hooks.logger.interval=1',
         'default_hooks.checkpoint.interval=100'],
        cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert '--compile: the Runner will torch.compile model.train_step' in res.stdout
    assert 'Model has been "compiled"' in res.stdout
    assert 'Iter(train) [2/2]' in res.stdout


def test_train_tool_compile_flag_keeps_the_configs_setting(tmp_path):
    spec = importlib.util.spec_from_file_location('train_tool', f'{REPO}/tools/train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')
    base = [config, '--work-dir', str(tmp_path), '--compile']
    assert tool.build_cfg(tool.parse_args(base)).compile is True
    assert tool.build_cfg(tool.parse_args(base[:-1])).get('compile') is None
    with logged_messages() as logged:
        kept = tool.build_cfg(tool.parse_args(
            base + ['--cfg-options', 'compile.backend=aot_eager']))
    assert kept.compile == dict(backend='aot_eager')
    assert "--compile: the config already sets compile={'backend': 'aot_eager'}; kept" in logged
