"""DA-VPT pieces: the guided backbone with DA-VPT+ bias tuning, the metric loss and k-means,
each against a hand computation."""
import math

import pytest
import torch
from mmseg.registry import MODELS

import mmseg_prompt  # noqa: F401
from mmseg_prompt.models import cosine_kmeans, map_unseen, proxy_anchor_loss
from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME


def build(type='DAVPTViT', **kw):
    cfg = dict(type=type, model_name=TINY_NAME, img_size=64, model_kwargs=TINY_KWARGS,
               out_indices=(0, 1, 2), prompt_dropout=0.0)
    cfg.update(kw)
    return MODELS.build(cfg)


def test_guided_block_carries_m_prompts_and_matches_vpt_deep(tiny_trunk_file):
    path, _ = tiny_trunk_file
    da = build(pretrained=str(path), num_prompts=2, num_guided_prompts=5).eval()
    assert da.prompts.counts == [2, 2, 5] and da.guided_blocks == (2,)
    vpt = build('VPTDeepViT', pretrained=str(path), num_prompts=[2, 2, 5]).eval()
    vpt.prompts.load_state_dict(da.prompts.state_dict())
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        outs, guidance = da.forward_guided(x)
        for a, b in zip(outs, vpt(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        for a, b in zip(outs, da(x)):  # the plain forward gives the same features
            torch.testing.assert_close(a, b)
    g = guidance[2]
    assert g['attn_out'].shape == g['block_in'].shape == (2, 12, 64)
    assert g['prompts'].shape == (5, 64) and g['cls'].shape == (2, 64)
    # the paper's prompt side: P W_q + b_q with the block's frozen weights
    attn = da.trunk.blocks[2].attn
    expected = da.prompts.get(2) @ attn.qkv.weight[:64].t() + attn.qkv.bias[:64]
    _, prompt_queries, _ = da.metric_features(guidance, 2, 'attn_out', 'query')
    torch.testing.assert_close(prompt_queries, expected)


def test_bias_tuning_adds_a_kv_delta_and_never_changes_the_pretrained_bias(tiny_trunk_file):
    path, _ = tiny_trunk_file
    da = build(pretrained=str(path), num_prompts=2, num_guided_prompts=3,
               bias_tuning=True).train()
    assert da.kv_bias.delta.shape == (3, 2, 64)
    with torch.no_grad():
        da.kv_bias.delta.normal_()
    # reference: VPT-Deep whose qkv biases were edited by hand (K and V parts only)
    ref = build('VPTDeepViT', pretrained=str(path), num_prompts=[2, 2, 3]).eval()
    ref.prompts.load_state_dict(da.prompts.state_dict())
    with torch.no_grad():
        for i, blk in enumerate(ref.trunk.blocks):
            blk.attn.qkv.bias[64:] += da.kv_bias.delta[i].flatten()
    x = torch.randn(2, 3, 32, 48)
    da.eval()
    with torch.no_grad():
        for a, b in zip(da(x), ref(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # gradients reach the prompts and the K/V deltas only; the pretrained bias stays put
    da.train()
    before = {k: v.clone() for k, v in da.trunk.state_dict().items()}
    trainable = {n for n, p in da.named_parameters() if p.requires_grad}
    assert trainable == {'prompts.tokens.0', 'prompts.tokens.1', 'prompts.tokens.2',
                         'kv_bias.delta'}
    opt = torch.optim.SGD([p for p in da.parameters() if p.requires_grad], lr=0.1)
    sum(o.square().mean() for o in da(x)).backward()
    assert da.kv_bias.delta.grad.abs().sum() > 0
    opt.step()
    for k, v in da.trunk.state_dict().items():
        assert torch.equal(v, before[k]), k


def loss_by_hand(feats, proxies, pos, r=5.0, alpha=32.0, delta=0.1, mean='paper'):
    """The formula of docs/methods.md, with plain Python loops."""
    N, M = pos.shape
    pos_sum, neg_sum = 0.0, 0.0
    for k in range(M):
        sp, sn = 0.0, 0.0
        for i in range(N):
            c = float(torch.dot(feats[i], proxies[k]) / (feats[i].norm() * proxies[k].norm()))
            s = r * c
            if pos[i, k]:
                sp += math.exp(-alpha * (s - delta))
            else:
                sn += math.exp(alpha * (s + delta))
        pos_sum += math.log(1 + sp)
        neg_sum += math.log(1 + sn)
    with_pos = int(pos.any(0).sum()) if mean == 'paper' else M
    return pos_sum / with_pos + neg_sum / M


@pytest.mark.parametrize('mean', ['paper', 'code'])
def test_metric_loss_equals_hand_computation(mean):
    torch.manual_seed(0)
    feats = torch.randn(6, 8, dtype=torch.float64)
    proxies = torch.randn(3, 8, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])  # proxy 2 has no positive in this batch
    pos = torch.nn.functional.one_hot(labels, 3).bool()
    # small alpha keeps the hand computation's plain exp() in range
    got = proxy_anchor_loss(feats, proxies, pos, scale=1.0, alpha=2.0, delta=0.1,
                            positive_mean=mean)
    want = loss_by_hand(feats, proxies, pos, r=1.0, alpha=2.0, delta=0.1, mean=mean)
    assert abs(float(got) - want) < 1e-9
    # the paper's and the code's forms differ exactly when some proxy has no positive
    other = 'code' if mean == 'paper' else 'paper'
    assert abs(float(got) - loss_by_hand(feats, proxies, pos, 1.0, 2.0, 0.1, other)) > 1e-3


def test_metric_loss_is_finite_at_the_papers_scale_and_multilabel():
    torch.manual_seed(0)
    feats, proxies = torch.randn(4, 16), torch.randn(5, 16)
    pos = torch.rand(4, 5) > 0.5
    loss = proxy_anchor_loss(feats, proxies, pos, scale=5.0, alpha=32.0)  # exp(160) in fp32
    assert torch.isfinite(loss)


def test_a_few_steps_lower_the_metric_loss():
    torch.manual_seed(0)
    feats = torch.randn(32, 16)
    labels = torch.randint(0, 4, (32,))
    pos = torch.nn.functional.one_hot(labels, 4).bool()
    proxies = torch.nn.Parameter(torch.randn(4, 16))
    opt = torch.optim.SGD([proxies], lr=0.05)
    losses = []
    for _ in range(10):
        loss = proxy_anchor_loss(feats, proxies, pos)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.8 * losses[0]


def test_cosine_kmeans_hand_example_and_warm_start():
    # two directions, three vectors each; magnitudes differ, cosine ignores them
    x = torch.tensor([[1.0, 0.1], [2.0, 0.0], [3.0, -0.1],
                      [0.0, 1.0], [0.1, 3.0], [-0.1, 2.0]])
    init = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assign, centroids = cosine_kmeans(x, 2, init=init)
    assert assign.tolist() == [0, 0, 0, 1, 1, 1]
    torch.testing.assert_close(centroids, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    # a warm start from the converged centroids reproduces them in one step
    assign2, centroids2 = cosine_kmeans(x, 2, init=centroids, max_iters=1)
    assert torch.equal(assign2, assign) and torch.equal(centroids2, centroids)
    # an init closer to the other cluster swaps the labels: the init is really used
    assign3, _ = cosine_kmeans(x, 2, init=init.flip(0))
    assert assign3.tolist() == [1, 1, 1, 0, 0, 0]


def test_farthest_first_init_spreads_over_clusters():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    init = farthest_first_init(x, 3, generator=torch.Generator().manual_seed(0))
    groups = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2}
    picked = [int((x == row).all(1).nonzero()) for row in init]
    assert sorted(groups[i] for i in picked) == [0, 1, 2]


def test_unseen_classes_are_still_mapped():
    assign = torch.tensor([0, 0, 1, 9, 9])  # classes 3 and 4 unseen: their entries are ignored
    seen = torch.tensor([True, True, True, False, False])
    out = map_unseen(assign, seen, k=3)
    assert out[:3].tolist() == [0, 0, 1]
    assert out[3].item() == 2 and out[4].item() == 1  # to the emptiest clusters, in order


# ---------------------------------------------------------------------------- the segmentor
from mmengine.structures import PixelData  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

from mmseg_prompt.models.utils import farthest_first_init, patch_labels  # noqa: E402


def guided_segmentor(trunk_file=None, backbone=None, num_classes=6, **metric):
    bb = dict(type='DAVPTViT', model_name=TINY_NAME, img_size=64, model_kwargs=TINY_KWARGS,
              out_indices=(0, 1, 2), num_prompts=2, num_guided_prompts=3, prompt_dropout=0.0,
              pretrained=None if trunk_file is None else str(trunk_file))
    bb.update(backbone or {})
    bb = {k: v for k, v in bb.items() if v is not None or k == 'pretrained'}
    return MODELS.build(dict(
        type='MetricGuidedEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3),
        backbone=bb,
        decode_head=dict(type='FCNHead', in_channels=64, in_index=2, channels=16, num_convs=1,
                         num_classes=num_classes, norm_cfg=dict(type='BN', requires_grad=True)),
        metric_cfg=dict(max_patches_per_class=10_000, **metric),
        test_cfg=dict(mode='whole')))


def toy_batch(B=2, H=48, W=64, num_classes=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(B):
        seg = torch.randint(0, num_classes, (H // 16, W // 16), generator=g)
        seg = seg.repeat_interleave(16, 0).repeat_interleave(16, 1)  # constant per patch
        seg[:16, :16] = 255  # one patch wholly unlabelled
        s = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        s.gt_sem_seg = PixelData(data=seg[None])
        samples.append(s)
    return torch.randn(B, 3, H, W, generator=g), samples


def test_patch_labels_take_the_majority_and_leave_ignored_patches_out():
    seg = torch.tensor([[1, 1, 2, 255, 255, 255],
                        [1, 2, 2, 255, 255, 3]])[None]  # patches of 2x3 -> one row of two
    out = patch_labels(seg, (2, 3))
    assert out.tolist() == [[[1, 255]]]
    # padding to the patch grid counts as ignore: a 2x4 map gives a 1x2 grid
    seg = torch.tensor([[4, 4, 4, 5], [4, 4, 4, 5]])[None]
    assert patch_labels(seg, (2, 3)).tolist() == [[[4, 255]]]


def test_metric_losses_equal_the_hand_composition(tiny_trunk_file):
    path, _ = tiny_trunk_file
    model = guided_segmentor(path, beta=0.5, lambda_cls=0.25).train()
    model.class_to_prompt.copy_(torch.tensor([0, 1, 2, 0, 1, 2]))
    inputs, samples = toy_batch()
    losses = model.loss(inputs, samples)
    assert {'loss_metric_patch', 'loss_metric_cls', 'decode.loss_ce'} <= set(losses)
    # by hand: features of the last block, labels from the patch-constant ground truth
    bb = model.backbone
    with torch.no_grad():  # the loss's forward again (no dropout in this model)
        _, guidance = bb.forward_guided(inputs)
    tokens, _, cls = bb.metric_features(guidance, 2, 'attn_out', 'query')
    P = bb.prompts.get(2)
    attn = bb.trunk.blocks[2].attn
    queries = P @ attn.qkv.weight[:64].t() + attn.qkv.bias[:64]
    labels = torch.stack([s.gt_sem_seg.data[0, ::16, ::16] for s in samples]).flatten(1)
    keep = labels.flatten() != 255
    feats = tokens.reshape(-1, 64)[keep]
    mapped = model.class_to_prompt[labels.flatten()[keep]]
    pos = torch.nn.functional.one_hot(mapped, 3).bool()
    want_patch = 0.5 * proxy_anchor_loss(feats, queries, pos)
    present = torch.zeros(2, 3, dtype=torch.bool)
    for b in range(2):
        for c in labels[b][labels[b] != 255].unique():
            present[b, model.class_to_prompt[c]] = True
    want_cls = 0.25 * proxy_anchor_loss(cls, queries, present)
    torch.testing.assert_close(losses['loss_metric_patch'], want_patch)
    torch.testing.assert_close(losses['loss_metric_cls'], want_cls)


def test_metric_loss_reaches_only_prompts_and_kv_deltas_and_steps_lower_it(tiny_trunk_file):
    path, _ = tiny_trunk_file
    model = guided_segmentor(path, backbone=dict(bias_tuning=True), beta=1.0,
                             lambda_cls=1.0).train()
    model.class_to_prompt.copy_(torch.tensor([0, 1, 2, 0, 1, 2]))
    inputs, samples = toy_batch()
    def metric(inputs, samples):  # the metric losses alone, on a guided forward
        _, guidance = model.backbone.forward_guided(inputs)
        return model.metric_losses(guidance, inputs, samples)
    loss = sum(metric(inputs, samples).values())
    loss.backward()
    with_grad = {n for n, p in model.named_parameters()
                 if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {'backbone.prompts.tokens.0', 'backbone.prompts.tokens.1',
                         'backbone.prompts.tokens.2', 'backbone.kv_bias.delta'}
    params = [p for n, p in model.named_parameters() if n.startswith('backbone.') and
              p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.05)
    values = []
    for _ in range(8):
        opt.zero_grad()
        loss = sum(metric(inputs, samples).values())
        values.append(loss.item())
        loss.backward()
        opt.step()
    assert values[-1] < 0.8 * values[0], values


def test_recluster_builds_warm_starts_and_maps_unseen_classes():
    model = guided_segmentor(num_classes=6)
    assert not model.mapping_ready()
    with pytest.raises(RuntimeError, match='ClassPromptMappingHook'):
        model.loss(*toy_batch())
    torch.manual_seed(0)
    D = 64
    dirs = torch.randn(3, D)
    means = torch.stack([dirs[0], dirs[0], dirs[1], dirs[1], dirs[2]]) + 0.01 * torch.randn(5, D)
    model.class_sums[:5] = means * 4
    model.class_counts[:5] = 4  # class 5 never seen
    assert model.recluster()
    mapping = model.class_to_prompt.tolist()
    assert mapping[0] == mapping[1] and mapping[2] == mapping[3]
    assert len({mapping[0], mapping[2], mapping[4]}) == 3
    assert 0 <= mapping[5] < 3 and model.mapping_ready()
    assert model.class_counts.sum() == 0  # statistics reset
    # the same as cosine k-means of the LayerNorm-ed means, started from the recorded draw
    ln = torch.nn.functional.layer_norm(means, (D,))
    init = farthest_first_init(ln, 3, generator=torch.Generator().manual_seed(0))
    assign, cent = cosine_kmeans(ln, 3, init=init)
    assert assign.tolist() == mapping[:5]
    torch.testing.assert_close(model.centroids, cent)
    # a warm start from these centroids on the same means changes nothing
    model.class_sums[:5] = means
    model.class_counts[:5] = 1
    model.recluster()
    assert model.class_to_prompt.tolist() == mapping
    torch.testing.assert_close(model.centroids, cent)


def test_mapping_is_saved_and_restored_with_the_checkpoint(tmp_path, tiny_trunk_file):
    from mmengine.runner import load_checkpoint
    path, _ = tiny_trunk_file
    model = guided_segmentor(path)
    model.class_to_prompt.copy_(torch.tensor([2, 1, 0, 0, 1, 2]))
    model.centroids.normal_()
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'ckpt.pth')
    fresh = guided_segmentor(path)
    load_checkpoint(fresh, str(tmp_path / 'ckpt.pth'), strict=True)
    assert torch.equal(fresh.class_to_prompt, model.class_to_prompt)
    assert torch.equal(fresh.centroids, model.centroids)
    assert fresh.mapping_ready()


def test_davpt_in_a_plain_encoder_decoder_warns_once(caplog):
    """Once per model, at its first training forward (train() called or not)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    seen = []
    handler = type('H', (__import__('logging').Handler,), {'emit': lambda s, r: seen.append(
        r.getMessage())})()
    logger.addHandler(handler)
    try:
        for call_train in (False, True):
            model = MODELS.build(dict(
                type='EncoderDecoder',
                backbone=dict(type='DAVPTViT', model_name=TINY_NAME, img_size=64,
                              model_kwargs=TINY_KWARGS, out_indices=(2,), num_guided_prompts=3),
                decode_head=dict(type='FCNHead', in_channels=64, channels=8, num_convs=1,
                                 num_classes=3)))  # in training mode, as every new module
            if call_train:
                model.train()
            for _ in range(2):
                model.extract_feat(torch.randn(1, 3, 32, 32))
    finally:
        logger.removeHandler(handler)
    warned = [m for m in seen if 'MetricGuidedEncoderDecoder' in m]
    assert len(warned) == 2 and 'VPT-Deep' in warned[0]


def test_cvpt_guidance_compares_the_cross_attention_logit_vectors(tiny_trunk_file):
    path, _ = tiny_trunk_file
    model = guided_segmentor(path, backbone=dict(
        type='CVPTViT', num_guided_prompts=None, num_prompts=3, guided_blocks=(-1,),
        cross_proj_drop=0.0))
    assert model.metric_cfg['token_side'] == 'cross_query'
    bb = model.backbone.eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        _, guidance = bb.forward_guided(x)
        q, k, cls = bb.metric_features(guidance, 2)
        attn = bb.trunk.blocks[2].attn
        P = bb.prompts.get(2)
        assert k.shape == (3, 64) and q.shape == (1, 6, 64) and cls.shape == (1, 64)
        torch.testing.assert_close(k, P @ attn.qkv.weight[64:128].t() + attn.qkv.bias[64:128])
        # per head, q . k / sqrt(d) is exactly the cross-attention logit of the block
        logits = (q.view(1, 6, 2, 32).transpose(1, 2) @
                  k.view(3, 2, 32).permute(1, 2, 0)) * attn.scale  # (1, H, N, M)
        x_mid = guidance[2]['queried']
        ref = attn.qkv(x_mid)[..., :64].view(1, 6, 2, 32).transpose(1, 2) @ \
            (P @ attn.qkv.weight[64:128].t() + attn.qkv.bias[64:128]).view(3, 2, 32).permute(
                1, 2, 0) * attn.scale
        torch.testing.assert_close(logits, ref)
    with pytest.raises(ValueError, match='cross_query'):
        guided_segmentor(path, backbone=dict(type='CVPTViT', num_guided_prompts=None,
                                             num_prompts=3, guided_blocks=(-1,)),
                         token_side='attn_out')
