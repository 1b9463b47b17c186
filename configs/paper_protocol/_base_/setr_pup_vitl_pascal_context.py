# _base_/setr_pup_vitl.py for PASCAL Context 59: 59 classes in every head (a list of heads is
# replaced whole, not merged), crop 480 and its sliding-window test (stride 320, as our UperNet
# PASCAL Context configs; neither paper's code has a PASCAL Context config, docs/methods.md).
_base_ = ['./setr_pup_vitl.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
setr_auxiliary_head = dict(
    type='SETRUPHead', in_channels=1024, channels=256, num_classes=59, dropout_ratio=0,
    norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'), num_convs=2, kernel_size=3,
    align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
model = dict(
    backbone=dict(img_size=480),
    decode_head=dict(num_classes=59),
    auxiliary_head=[dict(setr_auxiliary_head, in_index=i) for i in (0, 1, 2)],
    test_cfg=dict(mode='slide', crop_size=(480, 480), stride=(320, 320)))
