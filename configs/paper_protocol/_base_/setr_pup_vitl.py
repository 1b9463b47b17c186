# The papers' segmentation model: a frozen ViT-L/16 with SETR-PUP (mmseg 1.x's own SETRUPHead)
# and three SETR-PUP auxiliary heads, as in CVPT's `segmentation task/config.py` (lines 7-81)
# and DA-VPT's `segmentation/configs/setrpup_base_ade.py` (lines 13-62, with
# `_base_/models/setr_pup.py` lines 14-44), which agree on every value below. The top-level
# config picks the method (model.backbone.type and its options).
norm_cfg = dict(type='SyncBN', requires_grad=True)  # CVPT writes 'syncBN' (config.py:2)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ImageNet mean/std, as both papers' code (CVPT config.py:86-87; mmseg's SETR base), not
    # the 127.5 the jx weights were trained with (our UperNet configs): the papers' protocol
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
# one of the three auxiliary heads (on blocks 9, 14 and 19: in_index 0, 1, 2)
setr_auxiliary_head = dict(
    type='SETRUPHead', in_channels=1024, channels=256, num_classes=150, dropout_ratio=0,
    norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'), num_convs=2, kernel_size=3,
    align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
model = dict(
    type='StrictEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='FrozenViT',
        model_name='vit_large_patch16_384',
        # jx_vit_large_p16_384-b3be5167.pth (CVPT config.py:5-6), as a local file
        pretrained='checkpoints/jx_vit_large_p16_384-b3be5167.pth',
        img_size=512,
        out_indices=(9, 14, 19, 23),  # CVPT config.py:15; DA-VPT setr_pup.py:25
        final_norm=False),
    decode_head=dict(  # CVPT config.py:22-35; DA-VPT setr_pup.py:31-44
        type='SETRUPHead', in_channels=1024, channels=256, in_index=3, num_classes=150,
        dropout_ratio=0, norm_cfg=norm_cfg, num_convs=4, up_scale=2, kernel_size=3,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    # CVPT config.py:36-79; DA-VPT setrpup_base_ade.py:17-61 (up_scale: the default 4)
    auxiliary_head=[dict(setr_auxiliary_head, in_index=i) for i in (0, 1, 2)],
    train_cfg=dict(),
    # CVPT config.py:81; DA-VPT setrpup_base_ade.py:62
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
