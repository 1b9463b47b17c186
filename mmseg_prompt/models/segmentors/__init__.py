from .metric_guided import MetricGuidedEncoderDecoder
from .strict_encoder_decoder import StrictEncoderDecoder

__all__ = ['MetricGuidedEncoderDecoder', 'StrictEncoderDecoder']
