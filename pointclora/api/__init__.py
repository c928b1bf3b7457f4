"""The layer between the tools and the library: a config becomes a task handed to the Trainer; backbones are
provided (pre-trained first for the demo); saved weights are rebuilt by the task they name; a finished run is
evaluated or asked to predict. ``cli -> api -> tasks -> engine -> models / peft / datasets -> ops``.

Importing it registers every built-in section schema (models, datasets, peft) with :mod:`pointclora.config`, and lets
the old ``Trainer(cfg)`` find its task (:func:`pointclora.engine.trainer.set_task_resolver`).
"""

from .. import datasets as _datasets  # noqa: F401  (the owners of the config sections declare their schemas)
from .. import models as _models  # noqa: F401
from .. import peft as _peft  # noqa: F401
from .backbone import backbone_provider, provision_backbone
from .configure import load_cli_config, resolve_config
from .run import build_task, fit_seeds, make_trainer, run_finetune, summary_keys, sweep, train
from .weights import LoadedRun, WeightsError, load_weights, merge_weights

_peft.multi.set_model_factory(_models.create_model)  # peft knows no model: several heads are built through this

__all__ = [
    "LoadedRun",
    "WeightsError",
    "backbone_provider",
    "build_task",
    "fit_seeds",
    "load_cli_config",
    "load_weights",
    "make_trainer",
    "merge_weights",
    "provision_backbone",
    "resolve_config",
    "run_finetune",
    "summary_keys",
    "sweep",
    "train",
]
