# The linear segmentation probe of DINOv2 and DINOv3 on a frozen ViT-L: the last block's patch
# tokens, through the trunk's final LayerNorm, into BNLinearHead (BatchNorm + 1x1 conv). The
# top-level configs (configs/dinov2/, configs/dinov3/) set the trunk: model name, weights,
# img_size and its input normalisation (_base_/trunks/).
# - features: the last block only (DINOv2's "lin." protocol: its linear configs' `in_index=[3]`
#   of the last 4 blocks; DINOv3's config-ade20k-linear-training.yaml `backbone_out_layers:
#   LAST`), after the final norm (DINOv2's `get_intermediate_layers(norm=True)`, DINOv3's
#   `use_backbone_norm: True`): out_indices=(23,), final_norm=True.
# - head: BN + 1x1 conv (mmseg_prompt/models/decode_heads/bn_linear_head.py), dropout 0 (DINOv2);
#   the DINOv3 configs set 0.1.
norm_cfg = dict(type='SyncBN', requires_grad=True)
embed_dim = 1024
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ImageNet mean and std on the 0-255 scale, the DINOv2 and DINOv3 evaluations' (the top-level
    # configs set them again from _base_/trunks/, with their sources)
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='StrictEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='FrozenViT',
        out_indices=(23,),
        final_norm=True),
    decode_head=dict(
        type='BNLinearHead',
        in_channels=embed_dim,
        in_index=0,
        channels=embed_dim,
        dropout_ratio=0.0,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # DINOv2's linear configs and DINOv3's eval (config-ade20k-linear-training.yaml): slide 512,
    # stride 341
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
