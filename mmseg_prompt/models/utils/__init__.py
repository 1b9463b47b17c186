from .cosine_kmeans import cosine_kmeans, farthest_first_init, map_unseen
from .patch_labels import patch_labels, sample_per_class
from .random_bits_dropout import RandomBitsDropout, random_bits_keep_mask
from .state_dict_diff import Mismatch, StateDictDiff, diff_state_dict

__all__ = ['cosine_kmeans', 'diff_state_dict', 'farthest_first_init', 'map_unseen', 'Mismatch',
           'patch_labels', 'RandomBitsDropout', 'random_bits_keep_mask', 'sample_per_class',
           'StateDictDiff']
