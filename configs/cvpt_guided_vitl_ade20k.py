# CVPT cross-attention prompts with DA-VPT's metric guidance, which neither paper does, on a
# frozen ViT-L/16 with UperNet: ADE20K (150 classes), crop 512, 160k iterations, total batch 16.
# In CVPT the prompt-token similarity is exactly the cross-attention logit, so the guidance
# compares the block's queries of the patches with the keys of its prompts.
# Recipe sources:
# - prompts: CVPT's released segmentation config (10 per block, prompt and projection dropout
#   0.1); the last block's 10 prompts are guided, one per cluster of classes.
# - metric loss: DA-VPT's (see metric_cfg); mapping re-clustered once per epoch (20,210 / 16 =
#   1263 iterations).
# - optimizer: AdamW lr 1e-4, weight decay 0.05 (none on prompts), poly after a 1500-iteration
#   warm-up (see _base_/schedules/schedule_160k.py).
# - input normalisation: mean = std = 127.5, matching the jx_vit_large_p16_384 weights.
_base_ = ['./cvpt_vitl_ade20k.py']
model = dict(
    type='MetricGuidedEncoderDecoder',
    backbone=dict(guided_blocks=(-1,)),
    metric_cfg=dict(
        # beta, lambda: DA-VPT's fine-grained setting (it publishes no segmentation value)
        beta=0.05, lambda_cls=0.05,
        scale=5.0, alpha=32.0, delta=0.1,  # DA-VPT's code (docs/methods.md)
        positive_mean='paper',  # eq. 4: positives averaged over prompts that have some
        token_side='cross_query', prompt_side='cross_key',  # CVPT's cross-attention logit
        max_patches_per_class=32),
)
custom_hooks = [
    dict(type='ClassPromptMappingHook', interval=1263, init_max_iters=100,
         init_images_per_class=10)
]
