"""The configs of the toy experiments, apart from the experiments so that the command line reads them
without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sharpness.spec import SecondOrder
from sharpness.toy import option

Trainer = Literal["gd", "flow"]


@dataclass(frozen=True)
class LogisticConfig:
    """The run of the paper's notebook: d = 100, n = 50, noise 0.025, GD with step 5 for 100 steps."""

    d: int = option(100, "input dimension")
    n: int = option(50, "training examples (even)")
    n_test: int = option(1000, "test examples (even)")
    noise: float = option(0.025, "standard deviation of the class noise")
    lr: float = option(5.0, "gradient-descent step")
    steps: int = option(100, "gradient-descent steps")
    rho: float = option(0.5, "radius of the L2 ball (norm radius: rho * ||w||_2)")
    n_alphas: int = option(30, "number of scale factors alpha")
    log2_alpha_min: float = option(-10.0, "log2 of the smallest alpha")
    log2_alpha_max: float = option(10.0, "log2 of the largest alpha")
    n_iters: int = option(50, "m = n: Auto-PGD iterations")
    n_starts: int = option(5, "m = n: random starts, each one measure() call")
    seed: int = option(0, "seed of the data, the initialisation and the random starts")

    def alphas(self) -> list[float]:
        """``n_alphas`` log-spaced factors in ``[2^min, 2^max]`` (the notebook: 30 in [2^-10, 2^10])."""
        k = self.n_alphas - 1
        span = self.log2_alpha_max - self.log2_alpha_min
        return [2.0 ** (self.log2_alpha_min + span * i / max(k, 1)) for i in range(self.n_alphas)]


@dataclass(frozen=True)
class DiagonalConfig:
    """One run of the diagonal-network experiment (defaults: a few minutes on 2 CPU cores)."""

    n: int = option(40, "training examples (n < d)")
    d: int = option(100, "input dimension")
    sparsity: float = option(0.9, "fraction of zero entries of the sparse target")
    n_nets: int = option(50, "networks, one per initialisation scale alpha")
    alpha_min: float = option(1e-3, "smallest alpha (rich regime)")
    alpha_max: float = option(10.0, "largest alpha (kernel regime)")
    scale_spread: float = option(4.0, "random-scales task: feature scales log-uniform in [1/s, s]")
    support_scale: float = option(0.25, "weak-support task: scale of the features the target uses")
    rho_standard: float = option(0.05, "radius of the standard L2 ball")
    rho_adaptive: float = option(0.1, "radius of the elementwise-adaptive L2 ball")
    rho_inv: float = option(0.1, "radius of the geodesic ball, inv metric")
    rho_mix: float = option(0.1, "radius of the geodesic ball, mix metric")
    geodesic_map: SecondOrder = option("exact", "geodesic: exact geodesics (closed form for GL(1)) or the "  # noqa: RUF009
                                       "second-order map of attention ('blocks')")
    n_draws: int = option(400, "average case: noise draws (antithetic pairs)")
    n_iters: int = option(20, "worst case: Auto-PGD iterations")
    n_restarts: int = option(2, "worst case: Auto-PGD searches from random starts")
    n_lanczos: int = option(50, "eigen case: at most this many Lanczos steps")
    trainer: Trainer = option("gd", "gd: gradient descent, adaptive step; flow: exact gradient-flow limit")  # noqa: RUF009
    target_loss: float = option(1e-5, "gd: train until the train loss is at most this")
    seed: int = option(0, "seed of the data and of the measurements")

    def tasks(self) -> dict[str, dict[str, Any]]:
        """The data distributions compared: unit-norm columns, then unwhitened feature scales."""
        return {
            "sparse": {"target": "sparse"},
            "dense": {"target": "dense"},
            "sparse_random_scales": {"target": "sparse", "scale_spread": self.scale_spread},
            "sparse_weak_support": {"target": "sparse", "support_scale": self.support_scale},
        }
