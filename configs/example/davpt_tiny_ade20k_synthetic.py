# DA-VPT+ on the built-in synthetic example: the CVPT example config (same data, heads and
# schedule) with the model of configs/davpt_plus_vitl_ade20k.py, shrunk like the other example:
# a tiny trunk, 6 guided prompts in the last block (the example's 6 classes), the class-to-prompt
# mapping built from at most 5 batches and re-clustered every 100 iterations.
_base_ = ['./cvpt_tiny_ade20k_synthetic.py']

model = dict(
    type='MetricGuidedEncoderDecoder',
    backbone=dict(
        _delete_=True,
        type='DAVPTViT',
        model_name='vit_base_patch16_224',
        model_kwargs=dict(depth=4, embed_dim=64, num_heads=2),
        pretrained='demo_out/tiny_vit_trunk.pth',
        img_size=128,
        out_indices=(0, 1, 2, 3),
        num_prompts=4,
        guided_blocks=(-1,),
        num_guided_prompts=6,
        prompt_dropout=0.1,
        bias_tuning=True),
    metric_cfg=dict(beta=0.05, lambda_cls=0.05, max_patches_per_class=16))
custom_hooks = [
    dict(type='ClassPromptMappingHook', interval=100, init_max_iters=5, init_images_per_class=2)
]
