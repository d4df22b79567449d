"""Training: the run's config (``config``), its files, its saved config and loading a trained model
(``checkpoints``), stage 2's loss (``losses``) and the trainer (``trainer``). Code that only samples imports
``checkpoints``; the trainer (data, optimiser, DDP) loads on first use.
"""

import importlib

from gridit_core.training.checkpoints import (
    build_model_and_diffusion,
    export_weights,
    load_codec,
    load_sr,
    load_trained,
    read_config,
    read_metrics,
)  # fmt: skip
from gridit_core.training.config import CHECKPOINT_KINDS, TrainConfig

_TRAINER = ("InfiniteBatches", "Trainer", "init_distributed", "lr_factor", "training_data", "update_ema")


def __getattr__(name):
    if name in _TRAINER:
        return getattr(importlib.import_module("gridit_core.training.trainer"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CHECKPOINT_KINDS", "TrainConfig", "build_model_and_diffusion", "export_weights", "load_codec", "load_sr",
           "load_trained", "read_config", "read_metrics", *_TRAINER]  # fmt: skip
