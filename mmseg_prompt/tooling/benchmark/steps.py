"""What the benchmark times and counts for a built case: a training step and an inference forward
of one batch (docs/cost.md, "The benchmark"). ``args`` are the tool's flags (``--head``,
``--batch``, ``--img``, ``--dtype``).

A training step is forward, backward and an AdamW step on the tuned parameters; the loss is the
mean square of the backbone's outputs (``--head none``), or the segmentor's losses on random
labels (``--head upernet``).
"""
import torch
import torch.nn as nn


def autocast(args, device: torch.device):
    """Autocast to ``--dtype`` on ``device`` (a no-op for fp32)."""
    dtype = dict(fp32=None, bf16=torch.bfloat16)[args.dtype]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def forward_loss(args, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The training loss of the batch x (B, 3, H, W)."""
    if args.head == 'none':
        return sum(o.float().square().mean() for o in model(x))
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(args.batch):
        s = SegDataSample(metainfo=dict(img_shape=(args.img,) * 2, pad_shape=(args.img,) * 2))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, args.img, args.img),
                                                    device=x.device))
        samples.append(s)
    losses = model.loss(x, samples)
    return sum(v for k, v in losses.items() if 'loss' in k)


def train_step(args, model: nn.Module, x: torch.Tensor, opt) -> None:
    """Forward, backward and, with an optimizer ``opt`` (None: no tuned parameter), its step."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    with autocast(args, x.device):
        loss = forward_loss(args, model, x)
    loss.backward()
    if opt is not None:
        opt.step()


def infer(args, model: nn.Module, x: torch.Tensor) -> None:
    """One inference forward of the batch."""
    with torch.no_grad(), autocast(args, x.device):
        model(x) if args.head == 'none' else model(x, mode='tensor')
