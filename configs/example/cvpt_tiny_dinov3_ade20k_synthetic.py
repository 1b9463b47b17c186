# The built-in example's config on a RoPE trunk: configs/example/cvpt_tiny_ade20k_synthetic.py
# with a tiny DINOv3-style trunk (timm's Eva: rotary position embedding, 4 register tokens,
# LayerScale, separate q/v biases), so that the whole path (train, test --tta, export, mmseg's
# inference APIs) runs for an Eva trunk on a CPU. The trunk file is a local one: tests and users
# make it with mmseg_prompt.testing.save_random_trunk(cfg.model.backbone, PATH).
_base_ = ['./cvpt_tiny_ade20k_synthetic.py']

model = dict(
    # normalisation: ImageNet mean and std on the 0-255 scale, what DINOv2 and DINOv3 were
    # trained with (timm's pretrained_cfg of the dinov3 models: IMAGENET_DEFAULT_MEAN/STD)
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        model_name='vit_small_patch16_dinov3_qkvb',
        # 4 blocks of width 64; LayerScale starting at 0.5 (DINOv3's 1e-5 would make a random
        # trunk pass its input through)
        model_kwargs=dict(depth=4, embed_dim=64, num_heads=2, init_values=0.5),
        pretrained='demo_out/tiny_dinov3_trunk.pth'))
