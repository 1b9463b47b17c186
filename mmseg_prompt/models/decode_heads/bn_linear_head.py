"""The linear segmentation probe of DINOv2 and DINOv3: a BatchNorm and a 1x1 convolution on the
frozen trunk's patch tokens."""
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


@MODELS.register_module()
class BNLinearHead(BaseDecodeHead):
    """``conv_seg(BN(Dropout2d(x)))``: x the trunk's feature map (or several, resized to the
    first's size and concatenated, with ``input_transform='resize_concat'``), a BatchNorm over its
    channels, a 1x1 convolution to the classes at the features' resolution.

    DINOv2's ``BNHead`` (dinov2/eval/segmentation/models/decode_heads/linear_head.py) and DINOv3's
    ``LinearHead`` (dinov3/eval/segmentation/models/heads/linear_head.py) are this head; DINOv3
    drops out before the BatchNorm, as here (mmseg's ``cls_seg`` would drop out after it), and
    DINOv2 trains without dropout (``dropout_ratio=0``). The classifier is initialised as in
    both: normal with std 0.01, bias 0 (``BaseDecodeHead``'s init_cfg).

    ``channels`` is the BatchNorm's width: the input channels, summed over the inputs (no layer
    between the features and the norm). ``norm_cfg``: SyncBN in the configs (both evaluations use
    SyncBatchNorm), BN on one process.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        width = sum(self.in_channels) if isinstance(self.in_channels, (list, tuple)) \
            else self.in_channels
        if self.channels != width:
            raise ValueError(f'BNLinearHead: channels={self.channels} must equal the input '
                             f'channels ({width}): the BatchNorm is on the features themselves')
        if self.norm_cfg is None:
            raise ValueError('BNLinearHead needs norm_cfg (e.g. dict(type="SyncBN")): its '
                             'BatchNorm is half of the probe')
        self.bn = build_norm_layer(self.norm_cfg, self.channels)[1]

    def forward(self, inputs):
        x = self._transform_inputs(inputs)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.conv_seg(self.bn(x))
