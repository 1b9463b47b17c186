# Prompt comparison, AdaptFormer arm (docs/comparison.md): configs/adaptformer_vitl_ade20k.py on
# the tiny pretrained trunk and the hue-pairs task (_adaptformer_vitl_on_hue_pairs.py).
# Method hyperparameters as the ViT-L config (the official parallel adapter beside every block's
# MLP, scale 0.1, dropout 0.1, up-projection zero at init) except the bottleneck, 4 instead of
# 64, so that AdaptFormer trains about what the prompt arms train: 4 blocks x (2 x 4 x 96 + 4 +
# 96) = 3,472 values, against 4 x 10 x 96 = 3,840 prompt values. The learning rate is every
# arm's.
_base_ = ['./_adaptformer_vitl_on_hue_pairs.py']
comparison_label = 'AdaptFormer, bottleneck 4'  # its row in tools/compare_methods.py's tables
comparison_order = 90  # its place among the arms (ascending)
model = dict(backbone=dict(
    parts=[dict(type='AdaptFormer', bottleneck=4, scale=0.1, dropout=0.1)]))
