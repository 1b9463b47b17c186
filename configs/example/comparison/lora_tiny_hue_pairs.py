# Prompt comparison, LoRA arm (docs/comparison.md): configs/lora_vitl_ade20k.py on the tiny
# pretrained trunk and the hue-pairs task (_lora_vitl_on_hue_pairs.py).
# Method hyperparameters as the ViT-L config (q and v of every block, alpha = rank so the scale
# is 1, no dropout, B zero at init) except the rank, 2 instead of 8, so that LoRA trains about
# what the prompt arms train: 4 blocks x 2 targets x 2 x (96 + 96) = 3,072 values, against
# 4 x 10 x 96 = 3,840 prompt values. The learning rate is every arm's.
_base_ = ['./_lora_vitl_on_hue_pairs.py']
comparison_label = 'LoRA, rank 2 on q and v'  # its row in tools/compare_methods.py's tables
comparison_order = 80  # its place among the arms (ascending)
model = dict(backbone=dict(
    parts=[dict(type='LoRA', rank=2, alpha=2, dropout=0.0, targets=('q', 'v'))]))
