r"""lampe's NPE with zuko's flows and zuko-lu's hybrids, trained as sbi trains, for
:mod:`benchmarks.sbi_bench`.

lampe has no training loop and no z-scoring, so this module gives every lampe model the
same ones: :math:`\theta` and :math:`x` standardised by the training set's mean and
spread (the density of :math:`\theta` corrected by the scale's log-determinant), sbi's
training defaults (batch 200, Adam at learning rate 5e-4, gradient norm clipped at 5, 10%
of the simulations held out for validation, stop after 20 epochs without a better
validation loss, keep the best state) and at most `max_epochs` epochs. The flows have 5
transformations and zuko's default sizes (hyper-networks of two 64-unit layers, 8 bins).
"""

from __future__ import annotations

__all__ = ["MODELS", "LampeEstimator", "train"]

import copy
import math

import torch
import torch.nn as nn

from torch import Tensor

#: lampe's model name -> (the flow's module path, its class)
MODELS = {
    "lampe_nsf": ("zuko.flows", "NSF"),
    "lampe_lunsf": ("zuko_lu", "LUNSF"),
    "lampe_maf": ("zuko.flows", "MAF"),
    "lampe_lumaf": ("zuko_lu", "LUMAF"),
}


class LampeEstimator(nn.Module):
    r"""A lampe NPE on standardised :math:`\theta` and :math:`x`, with the interface of
    sbi's estimators that the benchmark uses: :py:`log_prob(theta, x)` with `theta` of
    shape :math:`(S, N, D)` and `x` of shape :math:`(N, L)`, and
    :py:`sample(shape, x)` of shape :math:`(*shape, N, D)`."""

    def __init__(self, model: str, theta: Tensor, x: Tensor) -> None:
        import importlib

        from lampe.inference import NPE

        module, name = MODELS[model]
        build = getattr(importlib.import_module(module), name)
        super().__init__()
        self.npe = NPE(theta.shape[-1], x.shape[-1], build=build, transforms=5)
        for key, data in (("theta", theta), ("x", x)):
            self.register_buffer(f"{key}_mean", data.mean(0))
            self.register_buffer(f"{key}_std", data.std(0).clamp(min=1e-12))

    def _x(self, x: Tensor) -> Tensor:
        return (x - self.x_mean) / self.x_std

    def log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        theta = (theta - self.theta_mean) / self.theta_std
        return self.npe(theta, self._x(x)) - self.theta_std.log().sum()

    def loss(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The negative log-density of each pair, as sbi's estimators' ``loss``."""

        return -self.log_prob(theta, x)

    def sample(self, shape: tuple[int, ...], x: Tensor) -> Tensor:
        return self.theta_mean + self.theta_std * self.npe.flow(self._x(x)).sample(shape)

    def posterior_sample(self, n: int, x_o: Tensor, prior) -> Tensor:
        r"""`n` samples at one observation, those outside the prior's support rejected (as
        sbi's posterior does)."""

        kept, total = [], 0
        while total < n:
            theta = self.sample((2 * n,), x_o[None])[:, 0]
            theta = theta[prior.support.check(theta)]
            kept.append(theta)
            total += len(theta)
        return torch.cat(kept)[:n]


def train(
    model: str, theta: Tensor, x: Tensor, seed: int, max_epochs: int
) -> tuple[LampeEstimator, int]:
    r"""Trains a lampe model as sbi trains its estimators; returns it (best validation
    state, in eval mode) and the number of epochs run."""

    torch.manual_seed(seed)
    order = torch.randperm(len(theta))
    n_val = int(0.1 * len(theta))
    val, fit = order[:n_val], order[n_val:]
    estimator = LampeEstimator(model, theta[fit], x[fit])
    opt = torch.optim.Adam(estimator.parameters(), lr=5e-4)

    best, best_state, since, epochs = math.inf, None, 0, 0
    while epochs < max_epochs and since < 20:
        estimator.train()
        for batch in fit[torch.randperm(len(fit))].split(200):
            loss = estimator.loss(theta[batch], x[batch]).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(estimator.parameters(), 5.0)
            opt.step()
        epochs += 1
        estimator.eval()
        with torch.no_grad():
            score = estimator.loss(theta[val], x[val]).mean().item()
        if score < best:
            best, best_state, since = score, copy.deepcopy(estimator.state_dict()), 0
        else:
            since += 1

    estimator.load_state_dict(best_state)
    estimator.eval()
    return estimator, epochs
