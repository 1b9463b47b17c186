"""Activation checkpointing of frozen blocks and bfloat16 mixed precision, on CPU."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401

from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME


@pytest.mark.parametrize('method,extra', [('CVPTViT', {}), ('VPTDeepViT', {}),
                                          ('DAVPTViT', dict(bias_tuning=True)),
                                          ('VPTDeepViT', dict(parts=[dict(type='BitFit')]))])
def test_checkpointing_gives_the_same_outputs_and_prompt_gradients(family_trunk, method, extra):
    """On a ViT and on a DINOv3 (Eva) trunk."""
    grads, outs = [], []
    for with_cp in (False, True):
        torch.manual_seed(0)
        bb = MODELS.build(dict(type=method, img_size=64, out_indices=(0, 1, 2), num_prompts=3,
                               with_cp=with_cp, prompt_dropout=0.1, **family_trunk,
                               **extra)).train()
        torch.manual_seed(1)  # same dropout masks; checkpoint replays the RNG state
        out = bb(torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(2)))
        sum((o ** 2).mean() for o in out).backward()
        outs.append([o.detach() for o in out])
        grads.append({n: p.grad.clone() for n, p in bb.named_parameters() if p.requires_grad})
        assert all(p.grad is None for p in bb.trunk.parameters())
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7)


def test_bf16_wrapper_autocasts_the_forward_and_keeps_fp32_weights(tiny_trunk_file):
    path, _ = tiny_trunk_file
    bb = MODELS.build(dict(type='CVPTViT', model_name=TINY_NAME, img_size=64,
                           model_kwargs=TINY_KWARGS, out_indices=(2,),
                           pretrained=str(path), num_prompts=3)).train()
    wrapper = build_optim_wrapper(bb, dict(type='BF16OptimWrapper',
                                           constructor='PromptOptimWrapperConstructor',
                                           optimizer=dict(type='SGD', lr=1.0)))
    before = bb.prompts.get(0).detach().clone()
    dtypes = []
    bb.trunk.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with wrapper.optim_context(bb):
        out = bb(torch.randn(1, 3, 32, 32))[0]
    assert dtypes == [torch.bfloat16]  # the matmuls ran in bfloat16
    bb(torch.randn(1, 3, 32, 32))
    assert dtypes[-1] == torch.float32  # and only inside the wrapper's context
    wrapper.update_params(out.float().square().mean())
    p = bb.prompts.get(0)
    assert p.dtype == torch.float32 and not torch.equal(p.detach(), before)
    assert all(q.grad is None for q in bb.trunk.parameters())
