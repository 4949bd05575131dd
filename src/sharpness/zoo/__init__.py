"""Model zoos: datasets, distribution shifts, models, training, checkpoints and grids.

>>> import sharpness.zoo as zoo
>>> sorted(zoo.models.ARCHS)
['cnn', 'cnn1d', 'mlp', 'preact_resnet18', 'simple_vit']

The main entry points: :func:`load` / :func:`save` a model folder, :func:`inputs` for the data a
card was trained on, :func:`evaluate` for ID and OOD metrics, :func:`sharpness.zoo.grid.train_grid`
for a whole zoo, :func:`sharpness.zoo.train.train` for one model, :func:`build` for an architecture.
"""

from sharpness.zoo import grid, models
from sharpness.zoo.checkpoint import load, model_id, read_weights, save
from sharpness.zoo.evaluation import evaluate, inputs
from sharpness.zoo.models import Normalize, build
from sharpness.zoo.train import TrainConfig

__all__ = ["Normalize", "TrainConfig", "build", "evaluate", "grid", "inputs", "load", "model_id", "models",
           "read_weights", "save"]
