"""mmseg-prompt: visual prompt tuning of frozen ViTs for mmsegmentation 1.x.

Importing the package registers its modules in mmseg's registries, so a config needs only
``custom_imports = dict(imports=['mmseg_prompt'], allow_failed_imports=False)``.
"""
from .utils.checkpoint_compat import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from . import datasets, engine, models  # noqa: E402,F401  (registers the modules)
from . import registry  # noqa: E402,F401  (the mmseg_prompt:: scope of installed configs)
from .utils import atomic_checkpoint  # noqa: E402,F401  (registers the 'atomic_local' backend)

__all__ = ['__version__', 'allow_mmengine_checkpoints']
