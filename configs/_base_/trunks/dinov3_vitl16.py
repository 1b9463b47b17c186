# The frozen DINOv3 ViT-L/16 (LVD-1689M) of configs/dinov3/: what its configs set in
# `model.backbone` (`dinov3_trunk`) and `model.data_preprocessor` (`dinov3_normalisation`), as
# `{{_base_.dinov3_trunk}}` and `{{_base_.dinov3_normalisation}}`. Variables, not a `model`, so
# that a config can inherit a method config and this file side by side.
dinov3_trunk = dict(
    # timm's DINOv3 ViT-L/16 (its `Eva` class): 24 blocks of width 1024, RoPE (no position table),
    # 4 register tokens, LayerScale, no q/k/v biases (Meta's and Hugging Face's files carry
    # all-zero q and v biases, which the loader drops, saying so in the log)
    model_name='vit_large_patch16_dinov3',
    # Meta's release file (dinov3_vitl16_pretrain_lvd1689m-<hash>.pth, facebookresearch/dinov3
    # README.md), as a local file, never downloaded; the Hugging Face folder
    # `facebook/dinov3-vitl16-pretrain-lvd1689m` or timm's own file
    # (`timm/vit_large_patch16_dinov3.lvd1689m`) work too.
    pretrained='checkpoints/dinov3_vitl16_pretrain_lvd1689m.pth',
    # patch 16: a 512 crop is a 32 x 32 grid, a 480 one 30 x 30, without padding; RoPE has no
    # table to resample
    img_size=512)
# ImageNet mean and std on the 0-255 scale, RGB: DINOv3's segmentation evaluation
# (dinov3/eval/segmentation/config.py, DEFAULT_MEAN / DEFAULT_STD: IMAGENET_DEFAULT_* x 255).
dinov3_normalisation = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
