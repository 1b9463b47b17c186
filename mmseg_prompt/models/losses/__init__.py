from .proxy_anchor import proxy_anchor_loss

__all__ = ['proxy_anchor_loss']
