# Prompt comparison, BitFit arm (docs/comparison.md): configs/bitfit_vitl_ade20k.py on the tiny
# pretrained trunk and the hue-pairs task (_bitfit_vitl_on_hue_pairs.py).
# The method as the ViT-L config (a delta on every bias tensor the backbone runs, zero at init,
# no weight decay); it has no size to set. On this trunk (width 96, 4 blocks, MLP ratio 4, the
# final norm run: final_norm=True with the last block in out_indices) it tunes, by hand:
# per block norm1 96 + q/k/v 288 + proj 96 + norm2 96 + fc1 384 + fc2 96 = 1,056, so
# 4 x 1,056 + the patch embedding's 96 + the final norm's 96 = 4,416 values, against
# 4 x 10 x 96 = 3,840 prompt values. The learning rate is every arm's.
_base_ = ['./_bitfit_vitl_on_hue_pairs.py']
comparison_label = 'BitFit, every bias'  # its row in tools/compare_methods.py's tables
comparison_order = 100  # its place among the arms (ascending)
