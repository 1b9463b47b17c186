from .backbones import *  # noqa: F401,F403  (registers the backbones)
from .decode_heads import BNLinearHead  # noqa: F401
from .losses import proxy_anchor_loss  # noqa: F401
from .segmentors import MetricGuidedEncoderDecoder, StrictEncoderDecoder  # noqa: F401
from .utils import cosine_kmeans, map_unseen  # noqa: F401
