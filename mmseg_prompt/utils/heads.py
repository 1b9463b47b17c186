"""The decode and auxiliary heads of a segmentor, built or as a config, with their config keys:
one walk for the label checks before a Runner is built (``tooling.label_classes``) and in it
(``engine.label_check_hook``)."""
from typing import List, Tuple

import torch.nn as nn

HEAD_KEYS = ('decode_head', 'auxiliary_head')


def named_heads(model) -> List[Tuple[str, object]]:
    """(config key, head) of each decode and auxiliary head of ``model``: a built segmentor (heads
    as attributes, several in an ``nn.ModuleList``) or a model config (a dict, several heads in a
    list or tuple). The key is ``model.<name>``, or ``model.<name>.<i>`` when that entry holds
    several heads. Every head is listed; the callers pick those that name ``num_classes``."""
    found = []
    for name in HEAD_KEYS:
        heads = model.get(name) if isinstance(model, dict) else getattr(model, name, None)
        if heads is None:
            continue
        heads = list(heads) if isinstance(heads, (list, tuple, nn.ModuleList)) else [heads]
        for i, head in enumerate(heads):
            found.append((f'model.{name}' + (f'.{i}' if len(heads) > 1 else ''), head))
    return found
