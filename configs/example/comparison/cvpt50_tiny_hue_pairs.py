# Prompt comparison, CVPT arm with 50 prompts per block (docs/comparison.md): the CVPT-10 arm with
# a large count (CVPT's best ADE20K result used 200 on ViT-L), everything else the same.
_base_ = ['./cvpt10_tiny_hue_pairs.py']
comparison_label = 'CVPT, 50 prompts'  # its row in tools/compare_methods.py's tables
comparison_order = 40  # its place among the arms (ascending)
model = dict(backbone=dict(num_prompts=50))
