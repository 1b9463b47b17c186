"""Counting the kernel-launching operators of one case (docs/cost.md, "Kernel launches"): one
training step (forward and backward under ``--dtype``'s autocast, no optimizer step) and one
inference forward, on the CPU, in the cross-attention form ``fold='auto'`` picks on
``--device``, with ``utils/op_counter.py``'s counter (views left out). ``args`` are the tool's
flags."""
import torch

from mmseg_prompt.utils.op_counter import KernelOpCounter
from . import steps
from .cases import (Case, backbone_of, build, cross_attention_form, is_bare_trunk,
                    pin_cross_attention_form)


def count_case_ops(args, case: Case, path: str = '') -> dict:
    """The case's row of ``ops.json``: ``method``, ``prompts``, the trunk's ``depth``, the
    cross-attention ``form`` (None without one), the operators and copies of a training step
    and of an inference, and the training step's operators by name (``train_counts``)."""
    from mmengine.registry import init_default_scope

    import mmseg_prompt  # noqa: F401
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = build(case, args, path)
    backbone = backbone_of(model, args.head)
    form = cross_attention_form(backbone, args.device)  # counted on the CPU in --device's form
    pin_cross_attention_form(backbone, form)
    x = torch.randn(args.batch, 3, args.img, args.img)
    if is_bare_trunk(backbone):
        x.requires_grad_(True)  # the loss back-propagates through every frozen block
    model.train()
    steps.train_step(args, model, x, None)  # once untimed and uncounted: lazy set-up stays out
    for p in model.parameters():  # as the optimizer's zero_grad(set_to_none=True) leaves them
        p.grad = None
    with KernelOpCounter() as train:
        steps.train_step(args, model, x, None)
    model.eval()
    x.requires_grad_(False)
    steps.infer(args, model, x)
    with KernelOpCounter() as infer:
        steps.infer(args, model, x)
    return dict(method=case.spec.method, prompts=case.prompts, depth=backbone.depth, form=form,
                train_ops=train.total, train_copies=train.copies, infer_ops=infer.total,
                infer_copies=infer.copies, train_counts=dict(train.counts.most_common()))
