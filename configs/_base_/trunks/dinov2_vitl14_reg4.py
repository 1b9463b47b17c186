# The frozen DINOv2 ViT-L/14 with 4 registers (LVD-142M) of configs/dinov2/, as variables (not a
# `model`), so that a config can inherit a method config and this file side by side and take them
# as `{{_base_.dinov2_trunk}}`, `{{_base_.dinov2_ade20k.data_preprocessor}}`, ...
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
    # kept at it, and resampled at run time to other grids
    img_size=518)
# ImageNet mean and std on the 0-255 scale, RGB: DINOv2's segmentation evaluation (its linear
# configs' img_norm_cfg, the `dinov2_vitl14_ade20k_linear_config.py` that
# notebooks/semantic_segmentation.ipynb loads) and timm's pretrained_cfg for these weights.
dinov2_normalisation = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])


# Crops of whole patches. DINOv2 trains on 512 crops and pads them (centred) to 518; here the
# crop is a multiple of 14 instead, as tools/train.py requires (mmseg_prompt/tooling/
# config_checks.py: a crop the trunk has to pad shifts the patch grid against the labels):
# ADE20K 518 = 37 x 37, the pretraining grid (DINOv2's 512 padded), PASCAL Context 476 = 34 x 34
# (mmseg's 480, the nearest multiple). Test images (short side 512 or 520) are padded right and
# bottom to a multiple of 14 by the data preprocessor, and the padding is cut from the logits
# before the metric (mmseg's EncoderDecoder does, from `padding_size`), so every window the trunk
# sees is whole patches; the sliding window keeps mmseg's 2/3 overlap.
def _dataset(crop, scale):
    """The data preprocessor, sliding-window test and training pipeline of one dataset: those of
    _base_/datasets/ (ade20k.py, pascal_context_59.py) with the crop above."""
    return dict(
        crop_size=(crop, crop),
        data_preprocessor=dict(size=(crop, crop), test_cfg=dict(size_divisor=14),
                               **dinov2_normalisation),
        test_cfg=dict(mode='slide', crop_size=(crop, crop), stride=(crop * 2 // 3,) * 2),
        train_pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='CheckSegLabels'),
            dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
            dict(type='RandomCrop', crop_size=(crop, crop), cat_max_ratio=0.75),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PhotoMetricDistortion'),
            dict(type='PackSegInputs')
        ])


dinov2_ade20k = _dataset(518, (2048, 512))
dinov2_pascal_context = _dataset(476, (520, 520))
