"""Model zoos: datasets, distribution shifts, models, training, checkpoints and grids.

>>> import sharpness.zoo as zoo
>>> sorted(zoo.models.ARCHS)
['cnn', 'cnn1d', 'mlp', 'preact_resnet18', 'simple_vit']

The main entry points: :func:`load` / :func:`save` a model folder, :func:`inputs` for the data a
card was trained on, :func:`evaluate` for ID and OOD metrics, :func:`sharpness.zoo.grid.train_grid`
for a whole zoo, :func:`sharpness.zoo.train.train` for one model, :func:`build` for an architecture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sharpness.lazy import attributes

if TYPE_CHECKING:
    from sharpness.zoo import grid, models
    from sharpness.zoo.archs import build
    from sharpness.zoo.checkpoint import load, model_id, save
    from sharpness.zoo.evaluation import evaluate, inputs
    from sharpness.zoo.models import Normalize
    from sharpness.zoo.train import TrainConfig
    from sharpness.zoo.weights import read_weights

# Imported on first use: the command line registers `sharpness zoo` without loading torch.
__getattr__ = attributes(__name__, {
    "grid": "sharpness.zoo.grid", "models": "sharpness.zoo.models", "load": "sharpness.zoo.checkpoint:load",
    "model_id": "sharpness.zoo.checkpoint:model_id", "read_weights": "sharpness.zoo.weights:read_weights",
    "save": "sharpness.zoo.checkpoint:save", "evaluate": "sharpness.zoo.evaluation:evaluate",
    "inputs": "sharpness.zoo.evaluation:inputs", "Normalize": "sharpness.zoo.models:Normalize",
    "build": "sharpness.zoo.archs:build", "TrainConfig": "sharpness.zoo.train:TrainConfig",
})

__all__ = ["Normalize", "TrainConfig", "build", "evaluate", "grid", "inputs", "load", "model_id", "models",
           "read_weights", "save"]
