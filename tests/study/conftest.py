"""A tiny real zoo shared by the study tests: three MLPs trained for two epochs on 512 MNIST-1D examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY_ZOO = {
    "name": "tiny",
    "data": {"name": "mnist1d", "options": {"n_train": 512, "n_test": 256}},
    "shifts": ["signal_noise"],
    "archs": {"mlp": {"name": "mlp", "kwargs": {"hidden": [16]}}},
    "hp": {"arch": "mlp", "epochs": 2, "batch_size": 64},
    "axes": {"lr": [0.01, 0.1, 0.3]},
}


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(zoo config file, folder of the three trained model folders)``."""
    from sharpness.zoo.grid import train_grid

    root = tmp_path_factory.mktemp("tiny-zoo")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_ZOO))
    train_grid(config, root / "models", progress=False)
    return config, root / "models"
