# A tiny version of the project's model structure (frozen timm ViT trunk with CVPT prompts ->
# Feature2Pyramid -> UPerHead), small enough to build and run on a CPU in seconds. `make demo` uses it with a tiny
# trunk saved as a local "pretrained" file. The ViT-L/16 configs arrive with the pipeline issue.
custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)
default_scope = 'mmseg'

embed_dim = 64
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN in the real configs; BN runs on one CPU
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        # mean = std = 127.5: what the ImageNet-21k ViT weights were trained with (methods.md)
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(128, 128)),
    backbone=dict(
        type='CVPTViT',
        num_prompts=4,
        model_name='vit_base_patch16_224',
        model_kwargs=dict(depth=4, embed_dim=embed_dim, num_heads=2),
        img_size=128,
        pretrained=None,  # set by tools/demo.py to the tiny trunk it saves
        out_indices=(0, 1, 2, 3)),
    neck=dict(type='Feature2Pyramid', embed_dim=embed_dim, rescales=[4, 2, 1, 0.5],
              norm_cfg=norm_cfg),
    decode_head=dict(
        type='UPerHead',
        in_channels=[embed_dim] * 4,
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
