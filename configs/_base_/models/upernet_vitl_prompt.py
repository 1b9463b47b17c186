# ViT-L/16 frozen trunk -> Feature2Pyramid -> UPerHead, with an FCN auxiliary head.
# Structure after mmseg's BEiT-L UperNet (features of blocks 7, 11, 15, 23; rescales 4, 2, 1, 0.5),
# the closest ViT-L UperNet in mmseg (docs/methods.md). The top-level config picks the prompt
# method by setting `model.backbone.type` and its prompt options.
norm_cfg = dict(type='SyncBN', requires_grad=True)
embed_dim = 1024
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # mean = std = 127.5: the normalisation the ImageNet-21k ViT-L weights (Google's original
    # `jx_vit_large_p16_384` and the AugReg ones) were trained with (timm's pretrained_cfg).
    # Change it together with `pretrained` if you use weights trained with ImageNet mean/std.
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    # mmseg's EncoderDecoder, but a checkpoint whose neck or head tensors do not fit is refused
    # on every loading path (mmengine's load_checkpoint would log a size mismatch and go on).
    type='StrictEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='FrozenViT',
        model_name='vit_large_patch16_384',
        # the weights VPT and CVPT used (timm: vit_large_patch16_384.orig_in21k_ft_in1k); a local
        # file, never downloaded. Any file timm's loader reads: .pth, .safetensors, Google .npz.
        pretrained='checkpoints/jx_vit_large_p16_384-b3be5167.pth',
        img_size=512,
        out_indices=(7, 11, 15, 23),
        final_norm=False),
    neck=dict(type='Feature2Pyramid', embed_dim=embed_dim, rescales=[4, 2, 1, 0.5],
              norm_cfg=norm_cfg),
    decode_head=dict(
        type='UPerHead',
        in_channels=[embed_dim] * 4,
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,  # mmseg's ViT UperNet width; BEiT-L's 1024 would quadruple the head
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=embed_dim,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
