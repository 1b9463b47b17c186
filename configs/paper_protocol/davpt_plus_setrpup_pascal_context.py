# DA-VPT+, the papers' protocol (SETR-PUP, SGD) on a frozen ViT-L/16 (ImageNet-21k):
# PASCAL Context 59, crop 480, 80k iterations, total batch 16.
# Recipe sources (file:line of the official code; docs/methods.md, "The papers' protocol", says
# where a paper and its code differ and which we chose):
# - model: SETR-PUP decode head and three auxiliary SETR-PUP heads (_base_/setr_pup_vitl.py);
# - prompts: DA-VPT+, as davpt_setrpup_*.py plus trained deltas on every block's key and
#   value bias (params.py:68-69, create.py:159-162);
# - optimizer: SGD lr 1e-3, momentum 0.9, no weight decay, heads at 10x, poly to 1e-4
#   (_base_/sgd_80k.py);
# - input normalisation: ImageNet mean/std, as both papers' code (_base_/setr_pup_vitl.py).
_base_ = [
    './_base_/setr_pup_vitl_pascal_context.py', '../_base_/datasets/pascal_context_59.py',
    '../_base_/default_runtime.py', './_base_/sgd_80k.py'
]
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
crop_size = (480, 480)
model = dict(
    type='MetricGuidedEncoderDecoder',
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='DAVPTViT',
        num_prompts=20,  # models/vit.py:289
        guided_blocks=(11,),  # models/vit.py:292-293
        num_guided_prompts=10,  # models/vit.py:288
        prompt_dropout=0.0,  # models/vit.py:287
        bias_tuning=True,  # DA-VPT+: K/V bias tuning (params.py:68-69, create.py:159-162)
        # DA-VPT's config turns the trunk's dropout off (setrpup_base_ade.py:14, drop_rate=0.)
        img_size=480),
    metric_cfg=dict(
        # DA-VPT's models/vit.py:296-298 and 334-337: beta, lambda 0.05 each, scale ratio 5,
        # proxy-anchor alpha 32 and margin 0.1
        beta=0.05, lambda_cls=0.05, scale=5.0, alpha=32.0, delta=0.1,
        positive_mean='paper',
        token_side='attn_out', prompt_side='query',  # the paper's sides (docs/methods.md)
        max_patches_per_class=32))
custom_hooks = [
    # the class-to-prompt mapping from the frozen trunk before training, then re-clustered once
    # per epoch (4,996 images / 16 = 312 iterations) as the paper does
    dict(type='ClassPromptMappingHook', interval=312, init_max_iters=100,
         init_images_per_class=10)
]
