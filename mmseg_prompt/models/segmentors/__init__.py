from .metric_guided import MetricGuidedEncoderDecoder

__all__ = ['MetricGuidedEncoderDecoder']
