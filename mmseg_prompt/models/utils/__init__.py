from .cosine_kmeans import cosine_kmeans, farthest_first_init, map_unseen
from .patch_labels import patch_labels, sample_per_class

__all__ = ['cosine_kmeans', 'farthest_first_init', 'map_unseen', 'patch_labels', 'sample_per_class']
