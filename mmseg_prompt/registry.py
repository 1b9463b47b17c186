"""The ``mmseg_prompt`` scope, for configs that inherit ``mmseg_prompt::<folder>/<file>.py``.

mmengine reads such a base from the installed package's ``.mim/configs`` (setup.py puts the
configs there), marks what it defines with ``_scope_='mmseg_prompt'`` and builds it from the
registries of that scope, which it imports from ``mmseg_prompt.registry``. Each registry here is a
child of mmseg's of the same kind: it finds mmseg's and mmengine's modules and ours (registered
in mmseg's). Importing this module also names this package for mmengine's ``pkg::`` lookup.
"""
import mmseg.registry as mmseg_registry
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import Registry

SCOPE = 'mmseg_prompt'
# mmengine resolves `<scope>::` only for the scopes in this table (scope -> pip distribution)
MODULE2PACKAGE.setdefault(SCOPE, 'mmseg_prompt')


def _child(parent: Registry, *locations: str) -> Registry:
    """A registry of our scope under mmseg's ``parent``; a look-up first imports ``locations``
    (mmseg's modules of that kind, as mmseg's registry would) and this package."""
    return Registry(parent.name, parent=parent, scope=SCOPE, locations=[*locations, SCOPE])


RUNNERS = _child(mmseg_registry.RUNNERS)
RUNNER_CONSTRUCTORS = _child(mmseg_registry.RUNNER_CONSTRUCTORS)
LOOPS = _child(mmseg_registry.LOOPS)
HOOKS = _child(mmseg_registry.HOOKS, 'mmseg.engine.hooks')
DATASETS = _child(mmseg_registry.DATASETS, 'mmseg.datasets')
DATA_SAMPLERS = _child(mmseg_registry.DATA_SAMPLERS)
TRANSFORMS = _child(mmseg_registry.TRANSFORMS, 'mmseg.datasets.transforms')
MODELS = _child(mmseg_registry.MODELS, 'mmseg.models')
MODEL_WRAPPERS = _child(mmseg_registry.MODEL_WRAPPERS, 'mmseg.models')
WEIGHT_INITIALIZERS = _child(mmseg_registry.WEIGHT_INITIALIZERS, 'mmseg.models')
OPTIMIZERS = _child(mmseg_registry.OPTIMIZERS, 'mmseg.engine.optimizers')
OPTIM_WRAPPERS = _child(mmseg_registry.OPTIM_WRAPPERS, 'mmseg.engine.optimizers')
OPTIM_WRAPPER_CONSTRUCTORS = _child(mmseg_registry.OPTIM_WRAPPER_CONSTRUCTORS,
                                    'mmseg.engine.optimizers')
PARAM_SCHEDULERS = _child(mmseg_registry.PARAM_SCHEDULERS, 'mmseg.engine.schedulers')
METRICS = _child(mmseg_registry.METRICS, 'mmseg.evaluation')
EVALUATOR = _child(mmseg_registry.EVALUATOR, 'mmseg.evaluation')
TASK_UTILS = _child(mmseg_registry.TASK_UTILS, 'mmseg.models')
VISUALIZERS = _child(mmseg_registry.VISUALIZERS, 'mmseg.visualization')
VISBACKENDS = _child(mmseg_registry.VISBACKENDS, 'mmseg.visualization')
LOG_PROCESSORS = _child(mmseg_registry.LOG_PROCESSORS, 'mmseg.visualization')
INFERENCERS = _child(mmseg_registry.INFERENCERS)
