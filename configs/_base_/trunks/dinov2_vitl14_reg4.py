# The frozen DINOv2 ViT-L/14 with 4 registers (LVD-142M) of configs/dinov2/: what its configs set
# in `model.backbone` (`dinov2_trunk`) and `model.data_preprocessor` (`dinov2_normalisation`),
# as `{{_base_.dinov2_trunk}}` and `{{_base_.dinov2_normalisation}}`. Variables, not a `model`,
# so that a config can inherit a method config and this file side by side.
dinov2_trunk = dict(
    # timm's DINOv2 ViT-L/14 with registers: 24 blocks of width 1024, LayerScale, q/k/v biases,
    # 4 register tokens after the class token, a position table for the patches only
    model_name='vit_large_patch14_reg4_dinov2',
    # Meta's release file (dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/
    # dinov2_vitl14_reg4_pretrain.pth, facebookresearch/dinov2 README.md), as a local file, never
    # downloaded; timm's own file (`timm/vit_large_patch14_reg4_dinov2.lvd142m`) or the Hugging
    # Face folder `facebook/dinov2-with-registers-large` work too.
    pretrained='checkpoints/dinov2_vitl14_reg4_pretrain.pth',
    # the pretraining grid, 37 x 37 (timm's pretrained_cfg input size 518): the position table is
    # kept at it and resampled at run time to each input's grid. A 512 crop is padded right and
    # bottom to 518 by the trunk (FrozenViT pads to a multiple of the patch), a 480 one to 490.
    img_size=518)
# ImageNet mean and std on the 0-255 scale, RGB: DINOv2's segmentation evaluation (its linear
# configs' img_norm_cfg, the `dinov2_vitl14_ade20k_linear_config.py` that
# notebooks/semantic_segmentation.ipynb loads) and timm's pretrained_cfg for these weights.
dinov2_normalisation = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
