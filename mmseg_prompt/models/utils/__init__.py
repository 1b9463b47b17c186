from .cosine_kmeans import cosine_kmeans, farthest_first_init, map_unseen
from .patch_labels import patch_labels, sample_per_class
from .random_bits_dropout import RandomBitsDropout, random_bits_keep_mask

__all__ = ['cosine_kmeans', 'farthest_first_init', 'map_unseen', 'patch_labels', 'sample_per_class',
           'RandomBitsDropout', 'random_bits_keep_mask']
