"""A measured experiment on α/r: a small numpy LoRA trained with Adam (or SGD) at several ranks.

Three conventions for the scale s on B·A are compared, all equal (s = 2) at the reference rank
r = 8: `fixed-alpha` (s = α/r with α = 16, Hu et al. 2021 §4.1), `rslora` (s = α/√r with
α = 2√8, Kalajdzievski 2023) and `alpha-2r` (α tied to the rank, s = 2 at every rank).

Two measurements:

* `first_step_gain`: how much the first optimizer step lowers the loss, per unit learning rate.
  With B = 0 only B moves; its gradient is s·G·(A·X)ᵀ. SGD steps along it, so the first-order
  loss decrease is ‖∇_B‖² ∝ s²·r; Adam's first step is η·sign(∇_B) (m̂/√v̂ = g/|g|), so the
  decrease is ‖∇_B‖₁ ∝ s·r. The rank-neutral scale is therefore α/√r under SGD but α/r under Adam.
* `learning_rate_sweep`: full Adam training runs over a grid of learning rates at each rank;
  a convention "transfers" if the best learning rate does not move with the rank.

The task is a teacher–student regression: a frozen W0, targets from W0 + ΔW* (ΔW* with
geometrically decaying singular values, so more rank keeps helping) plus label noise. Pure
numpy (runs under Pyodide); deterministic for a given seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "RULES",
    "REFERENCE_RANK",
    "scale_for",
    "RegressionTask",
    "make_task",
    "first_step_gain",
    "first_step_exponent",
    "LearningRateSweep",
    "learning_rate_sweep",
]

RULES = ("fixed-alpha", "rslora", "alpha-2r")
REFERENCE_RANK = 8
REFERENCE_SCALE = 2.0  # every rule gives s = 2 at r = 8 (α = 16 with α/r)
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults


def scale_for(rule: str, r: int) -> float:
    """The factor s on B·A at rank r for one convention (all equal to 2 at r = 8)."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r: must be a positive integer, got {r!r}")
    if rule == "fixed-alpha":
        return REFERENCE_SCALE * REFERENCE_RANK / r  # α/r, α = 16
    if rule == "rslora":
        return REFERENCE_SCALE * math.sqrt(REFERENCE_RANK) / math.sqrt(r)  # α/√r, α = 2√8
    if rule == "alpha-2r":
        return REFERENCE_SCALE  # α = 2r
    raise ValueError(f"rule: must be one of {', '.join(RULES)}, got {rule!r}")


@dataclass(frozen=True, eq=False)
class RegressionTask:
    """Teacher–student data for one adapted layer: y = (W0 + ΔW*)·x + noise."""

    W0: np.ndarray  # (d, d) frozen base weight
    X: np.ndarray  # (n, d) training inputs, one token per row
    Y: np.ndarray  # (n, d) training targets (noisy)
    X_test: np.ndarray  # (n, d) held-out inputs
    Y_test: np.ndarray  # (n, d) held-out targets (clean)


def make_task(d: int = 48, n: int = 1024, decay: float = 0.85, noise: float = 0.3, seed: int = 0) -> RegressionTask:
    """A d×d layer whose needed update ΔW* has singular values decay^k (k = 0, 1, ...)."""
    if d < 2 or n < 2:
        raise ValueError(f"d, n: must be at least 2, got d={d!r}, n={n!r}")
    if not 0 < decay < 1:
        raise ValueError(f"decay: must be in (0, 1), got {decay!r}")
    rng = np.random.default_rng(seed)
    W0 = rng.standard_normal((d, d)) / math.sqrt(d)
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    delta = (U * decay ** np.arange(d)) @ V.T  # the update full fine-tuning would find
    X, X_test = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    Y = X @ (W0 + delta).T + noise * rng.standard_normal((n, d))
    return RegressionTask(W0, X, Y, X_test, X_test @ (W0 + delta).T)


def _init_A(d: int, r: int, seed: int) -> np.ndarray:
    """peft's kaiming_uniform_(a=√5) on lora_A: U(-1/√d_in, 1/√d_in)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (r, d)) / math.sqrt(d)


def first_step_gain(task: RegressionTask, r: int, scale: float, optimizer: str, seed: int = 1) -> float:
    """First-order loss decrease of step one per unit learning rate (B = 0, A as peft draws it).

    SGD: ‖∇_B L‖²_F. Adam: ‖∇_B L‖₁, because its first step is lr·sign(∇_B L).
    Loss: L = ½·mean over tokens of ‖h − y‖², full batch.
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer: must be 'adam' or 'sgd', got {optimizer!r}")
    A = _init_A(task.W0.shape[0], r, seed)
    G = (task.X @ task.W0.T - task.Y) / task.X.shape[0]  # dL/dH at B = 0, (n, d)
    grad_B = scale * G.T @ (task.X @ A.T)  # (d, r)
    return float(np.abs(grad_B).sum() if optimizer == "adam" else (grad_B**2).sum())


def first_step_exponent(optimizer: str, rule: str, ranks: tuple[int, ...] = (2, 8, 32, 128), d: int = 256,
                        seed: int = 0) -> float:
    """Slope of log(first-step gain) against log(r): 0 means the convention is rank-neutral."""
    task = _cached_task(d, 512, 0.85, 0.3, seed)
    gains = [first_step_gain(task, r, scale_for(rule, r), optimizer, seed + 1) for r in ranks]
    return float(np.polyfit(np.log(ranks), np.log(gains), 1)[0])


@lru_cache(maxsize=8)
def _cached_task(d: int, n: int, decay: float, noise: float, seed: int) -> RegressionTask:
    return make_task(d, n, decay, noise, seed)


def _train_adam(task: RegressionTask, r: int, scale: float, lrs: np.ndarray, steps: int, batch: int,
                seed: int) -> np.ndarray:
    """Adam on A and B for every learning rate at once (a leading axis of runs); held-out loss per run."""
    d = task.W0.shape[0]
    runs = len(lrs)
    A = np.broadcast_to(_init_A(d, r, seed), (runs, r, d)).copy()
    B = np.zeros((runs, d, r))
    lr = lrs[:, None, None]
    moments = [np.zeros_like(A), np.zeros_like(A), np.zeros_like(B), np.zeros_like(B)]
    order = np.random.default_rng(seed + 1)
    for t in range(1, steps + 1):
        rows = order.integers(0, task.X.shape[0], batch)
        x, y = task.X[rows], task.Y[rows]  # (b, d)
        z = x @ A.transpose(0, 2, 1)  # (runs, b, r): A·x per token
        h = x @ task.W0.T + scale * z @ B.transpose(0, 2, 1)  # (runs, b, d)
        g = (h - y) / batch  # dL/dh
        grad_B = scale * g.transpose(0, 2, 1) @ z  # (runs, d, r)
        grad_A = scale * (g @ B).transpose(0, 2, 1) @ x  # (runs, r, d)
        for i, (param, grad) in enumerate(((A, grad_A), (B, grad_B))):
            m, v = moments[2 * i], moments[2 * i + 1]
            m *= _BETA1
            m += (1 - _BETA1) * grad
            v *= _BETA2
            v += (1 - _BETA2) * grad**2
            param -= lr * (m / (1 - _BETA1**t)) / (np.sqrt(v / (1 - _BETA2**t)) + _EPS)
    h_test = task.X_test @ task.W0.T + scale * (task.X_test @ A.transpose(0, 2, 1)) @ B.transpose(0, 2, 1)
    loss = 0.5 * np.mean(np.sum((h_test - task.Y_test) ** 2, axis=-1), axis=-1)
    return np.where(np.isfinite(loss), loss, np.inf)


@dataclass(frozen=True)
class LearningRateSweep:
    """Held-out loss after `steps` Adam steps, for each rank (rows) and learning rate (columns)."""

    rule: str
    ranks: tuple[int, ...]
    learning_rates: tuple[float, ...]
    test_loss: tuple[tuple[float, ...], ...]
    base_loss: float  # the frozen base model's held-out loss (B = 0)

    def best_learning_rate(self, r: int) -> float:
        row = self.test_loss[self.ranks.index(r)]
        return self.learning_rates[int(np.argmin(row))]

    def best_loss(self, r: int) -> float:
        return min(self.test_loss[self.ranks.index(r)])

    def loss_at(self, r: int, learning_rate: float) -> float:
        return self.test_loss[self.ranks.index(r)][self.learning_rates.index(learning_rate)]

    def best_lr_ratio(self) -> float:
        """Best learning rate at the largest rank over that at the smallest: 1 means it transfers."""
        return self.best_learning_rate(self.ranks[-1]) / self.best_learning_rate(self.ranks[0])


@lru_cache(maxsize=16)
def learning_rate_sweep(rule: str, ranks: tuple[int, ...] = (2, 8, 32), steps: int = 100, batch: int = 32,
                        lr_exponents: tuple[float, ...] = tuple(k / 2 for k in range(-22, -11)),
                        d: int = 48, seed: int = 0) -> LearningRateSweep:
    """Train at every rank and every learning rate 2**e (e in lr_exponents) with Adam; seeds fixed."""
    task = _cached_task(d, 1024, 0.85, 0.3, seed)
    lrs = np.array([2.0**e for e in lr_exponents])
    losses = tuple(tuple(float(v) for v in _train_adam(task, r, scale_for(rule, r), lrs, steps, batch, seed + 1))
                   for r in ranks)
    base = float(0.5 * np.mean(np.sum((task.X_test @ task.W0.T - task.Y_test) ** 2, axis=-1)))
    return LearningRateSweep(rule, tuple(ranks), tuple(float(v) for v in lrs), losses, base)
