"""DA-VPT's metric guidance for dense prediction, as an mmseg segmentor.

Total loss = decode (+ auxiliary) losses + beta * L_ML(X, P) + lambda * L_ML(P, x_cls), with
L_ML the Proxy-Anchor loss of ``proxy_anchor_loss`` and, per docs/methods.md's dense decision:

- X: patch features of the guided block, labelled with the majority ground-truth label of each
  patch (patches dominated by the ignore index left out), at most ``max_patches_per_class`` per
  class per batch; a patch's positive prompt is the one its class maps to;
- x_cls: the class token after the guided block, with every class present in the image as a
  multi-label target (positives = the prompts of all present classes).

The class-to-prompt mapping (C classes -> M prompts) is kept in buffers, so checkpoints save it
and a resume restores it. ``ClassPromptMappingHook`` builds it and re-clusters it during training
from the class means this segmentor accumulates.
"""
import logging
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, broadcast, get_rank, is_distributed
from mmengine.logging import print_log
from mmseg.registry import MODELS
from mmseg.utils import SampleList

from ..backbones.frozen_vit import FrozenViT
from ..losses import proxy_anchor_loss
from ..utils import cosine_kmeans, farthest_first_init, map_unseen, patch_labels, sample_per_class
from .strict_encoder_decoder import StrictEncoderDecoder


@MODELS.register_module()
class MetricGuidedEncoderDecoder(StrictEncoderDecoder):
    """``StrictEncoderDecoder`` plus DA-VPT's metric losses on the backbone's guided prompts.

    Args:
        metric_cfg: options of the guidance, defaults in brackets:
            beta (0.01), lambda_cls (0.01): weights of L_ML(X, P) and L_ML(P, x_cls);
            scale (5.0), alpha (32.0), delta (0.1): the loss's r, alpha and delta;
            positive_mean ('paper' | 'code'): see ``proxy_anchor_loss``;
            token_side, prompt_side: which tensors are compared; DAVPTViT: 'attn_out' (paper)
                or 'block_in' (code), 'query' (paper) or 'raw' (code); CVPTViT: 'cross_query'
                and 'cross_key' (its cross-attention logit). Default: the backbone's first;
            max_patches_per_class (32): patch features per class per batch in L_ML(X, P);
            kmeans_iters (20), kmeans_tol (1e-4): the cosine k-means of the mapping;
            seed (0): draws the first centroids, the same on every rank.
        **kwargs: ``EncoderDecoder`` arguments; the backbone must have guided blocks
            (``DAVPTViT``, or ``CVPTViT`` with ``guided_blocks``).
    """

    DEFAULTS = dict(beta=0.01, lambda_cls=0.01, scale=5.0, alpha=32.0, delta=0.1,
                    positive_mean='paper', token_side=None, prompt_side=None,
                    max_patches_per_class=32, kmeans_iters=20, kmeans_tol=1e-4, seed=0)

    def __init__(self, metric_cfg: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        unknown = set(metric_cfg or {}) - set(self.DEFAULTS)
        if unknown:
            raise KeyError(f'unknown metric_cfg keys {sorted(unknown)}; known: '
                           f'{sorted(self.DEFAULTS)}')
        cfg = dict(self.DEFAULTS, **(metric_cfg or {}))
        bb = self.backbone
        if not isinstance(bb, FrozenViT) or not bb.guided_blocks:
            raise ValueError(f'MetricGuidedEncoderDecoder needs a backbone with guided prompt '
                             f'blocks: DAVPTViT, or CVPTViT with guided_blocks=(...); got '
                             f'{type(bb).__name__} without any')
        cfg['token_side'], cfg['prompt_side'] = bb.metric_sides(cfg['token_side'],
                                                                cfg['prompt_side'])
        self.metric_cfg = cfg
        self.num_prompts = bb.num_guided_prompts
        self.guided = bb.guided_blocks
        # the guided features of the forward that loss() runs (see extract_feat); None outside
        self._guidance_sink: Optional[dict] = None
        C, D = self.num_classes, bb.embed_dim
        self.register_buffer('class_to_prompt', torch.full((C,), -1, dtype=torch.long))
        self.register_buffer('centroids', torch.zeros(self.num_prompts, D))
        self.register_buffer('class_sums', torch.zeros(C, D))
        self.register_buffer('class_counts', torch.zeros(C))

    @property
    def ignore_index(self) -> int:
        return self.decode_head.ignore_index

    # ------------------------------------------------------------------ the mapping
    def mapping_ready(self) -> bool:
        return bool((self.class_to_prompt >= 0).all())

    def _patch_labels(self, inputs: torch.Tensor, data_samples: SampleList
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, N) patch labels at the backbone's grid, and (B, C) classes present per image."""
        seg = torch.stack([ds.gt_sem_seg.data[0] for ds in data_samples]).to(inputs.device)
        labels = patch_labels(seg.long(), self.backbone.patch_size, self.ignore_index)
        present = torch.zeros(seg.shape[0], self.num_classes, dtype=torch.bool,
                              device=seg.device)
        for b in range(seg.shape[0]):
            cls = seg[b].unique()
            cls = cls[(cls != self.ignore_index) & (cls < self.num_classes)]
            present[b, cls] = True
        return labels.flatten(1), present

    @torch.no_grad()
    def accumulate_class_stats(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        """Add patch features (B, N, D) to the per-class sums and counts, by patch label."""
        feats, labels = tokens.reshape(-1, tokens.shape[-1]), labels.reshape(-1)
        valid = labels != self.ignore_index
        self.class_sums.index_add_(0, labels[valid], feats[valid].float())
        self.class_counts.index_add_(0, labels[valid],
                                     torch.ones_like(labels[valid], dtype=torch.float))

    @torch.no_grad()
    def collect_class_stats(self, inputs: torch.Tensor, data_samples: SampleList) -> None:
        """Forward the backbone without gradients and accumulate class statistics."""
        _, guidance = self.backbone.forward_guided(inputs)
        labels, _ = self._patch_labels(inputs, data_samples)
        tokens, _, _ = self.backbone.metric_features(guidance, self.guided[0],
                                                     self.metric_cfg['token_side'],
                                                     self.metric_cfg['prompt_side'])
        self.accumulate_class_stats(tokens, labels)

    @torch.no_grad()
    def recluster(self) -> bool:
        """Cosine k-means of the LayerNorm-ed class means into the M prompts (docs/methods.md).

        Class sums and counts are all-reduced first under distributed training; the first run
        starts from ``farthest_first_init`` (drawn with ``seed``), later runs warm-start from the
        previous centroids; classes never seen are still mapped. The result is broadcast from
        rank 0, so every rank holds the same mapping. Resets the statistics. Returns False if no
        class was seen.
        """
        sums, counts = self.class_sums.clone(), self.class_counts.clone()
        if is_distributed():
            all_reduce(sums)
            all_reduce(counts)
        seen = counts > 0
        self.class_sums.zero_()
        self.class_counts.zero_()
        if not seen.any():
            print_log('class-to-prompt mapping: no labelled patch seen, mapping unchanged',
                      logger='current', level=logging.WARNING)
            return False
        means = F.layer_norm(sums[seen] / counts[seen, None], (sums.shape[1],))
        M = self.num_prompts
        warm = self.mapping_ready()
        if warm:
            init = self.centroids.clone()
        else:
            g = torch.Generator().manual_seed(self.metric_cfg['seed'])
            cpu = means.cpu()
            if cpu.shape[0] >= M:
                init = farthest_first_init(cpu, M, generator=g)
            else:  # fewer seen classes than prompts: random extra centroids
                init = torch.cat([cpu, torch.randn(M - cpu.shape[0], cpu.shape[1], generator=g)])
            init = init.to(means.device)
        assign, centroids = cosine_kmeans(means, M, init=init,
                                          max_iters=self.metric_cfg['kmeans_iters'],
                                          tol=self.metric_cfg['kmeans_tol'])
        full = torch.zeros_like(self.class_to_prompt)
        full[seen] = assign
        self.class_to_prompt.copy_(map_unseen(full, seen, M))
        self.centroids.copy_(centroids)
        if is_distributed():
            broadcast(self.class_to_prompt, 0)
            broadcast(self.centroids, 0)
        sizes = torch.bincount(self.class_to_prompt, minlength=M).tolist()
        if get_rank() == 0:
            print_log(f'class-to-prompt mapping {"re-clustered (warm start)" if warm else "built"}'
                      f': {int(seen.sum())}/{self.num_classes} classes seen, classes per prompt '
                      f'{sizes}', logger='current')
        return True

    # ------------------------------------------------------------------ losses
    def extract_feat(self, inputs: torch.Tensor) -> List[torch.Tensor]:
        """``EncoderDecoder.extract_feat``; inside :meth:`loss` the backbone runs
        ``forward_guided`` and the guided features go to that call's sink."""
        if self._guidance_sink is None:
            return super().extract_feat(inputs)
        x, guidance = self.backbone.forward_guided(inputs)
        self._guidance_sink.update(guidance)
        return self.neck(x) if self.with_neck else x

    def loss(self, inputs: torch.Tensor, data_samples: SampleList) -> dict:
        """``EncoderDecoder.loss`` (decode and auxiliary losses) plus :meth:`metric_losses` on
        the guided features of the same forward."""
        self._guidance_sink = guidance = {}
        try:
            losses = super().loss(inputs, data_samples)
        finally:
            self._guidance_sink = None
        losses.update(self.metric_losses(guidance, inputs, data_samples))
        return losses

    def metric_losses(self, guidance: dict, inputs: torch.Tensor,
                      data_samples: SampleList) -> dict:
        """beta * L_ML(X, P) and lambda * L_ML(P, x_cls), averaged over the guided blocks, on
        ``guidance`` from the backbone's ``forward_guided``. A term whose weight is 0 is not
        computed (a zero loss is logged): no patches are sampled and no random number is drawn
        for it, so with both weights 0 training follows the same random stream as the same
        prompt layout without guidance. The class statistics for the mapping are kept either
        way."""
        if not self.mapping_ready():
            raise RuntimeError(
                'the class-to-prompt mapping is not built: MetricGuidedEncoderDecoder needs '
                "custom_hooks=[dict(type='ClassPromptMappingHook')] in the config")
        cfg = self.metric_cfg
        labels, present = self._patch_labels(inputs, data_samples)
        M = self.num_prompts
        arange = torch.arange(M, device=labels.device)
        prompt_of_class = F.one_hot(self.class_to_prompt, M).bool()  # (C, M)
        loss_kw = dict(scale=cfg['scale'], alpha=cfg['alpha'], delta=cfg['delta'],
                       positive_mean=cfg['positive_mean'])
        patch_terms, cls_terms = [], []
        for i in self.guided:
            tokens, prompts, cls = self.backbone.metric_features(guidance, i, cfg['token_side'],
                                                                 cfg['prompt_side'])
            if i == self.guided[0]:
                self.accumulate_class_stats(tokens.detach(), labels)
            zero = prompts.sum() * 0
            if cfg['beta'] == 0:
                patch_terms.append(zero)
            else:
                flat, flat_labels = tokens.reshape(-1, tokens.shape[-1]), labels.reshape(-1)
                idx = sample_per_class(flat_labels, cfg['max_patches_per_class'],
                                       self.ignore_index)
                if idx.numel():
                    sel = flat_labels[idx]
                    positives = self.class_to_prompt[sel][:, None] == arange[None]
                    patch_terms.append(proxy_anchor_loss(flat[idx], prompts, positives,
                                                         **loss_kw))
                else:
                    patch_terms.append(zero)
            has_any = present.any(1)
            if cfg['lambda_cls'] != 0 and has_any.any():
                positives = (present.float() @ prompt_of_class.float()) > 0  # (B, M)
                cls_terms.append(proxy_anchor_loss(cls[has_any], prompts, positives[has_any],
                                                   **loss_kw))
            else:
                cls_terms.append(zero)
        return dict(loss_metric_patch=cfg['beta'] * torch.stack(patch_terms).mean(),
                    loss_metric_cls=cfg['lambda_cls'] * torch.stack(cls_terms).mean())
