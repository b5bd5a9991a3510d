r"""Four standard simulation-based-inference tasks, written from their published
definitions (Lueckmann et al. 2021, "Benchmarking simulation-based inference", the
`sbibm` package), each with a prior, a simulator and a sampler of the reference
posterior; and the metrics of the benchmark (C2ST, expected coverage).

Everything takes a :class:`torch.Generator`, so a seed fixes every draw. A task has

* ``prior``: a :class:`torch.distributions.Distribution` (for sbi's ``NPE`` and for
  support checks) and ``sample_prior(n, generator)``;
* ``simulate(theta, generator) -> x``, one simulation per row of `theta`;
* ``reference(x_o, n, generator) -> theta``: `n` samples of the exact posterior
  :math:`p(\theta \mid x_o)` (analytic, by rejection, or by MCMC on the known likelihood
  where the task says so).

    python -c "from benchmarks.sbi_tasks import TASKS; print(list(TASKS))"
"""

from __future__ import annotations

import math

import torch

from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Uniform


def _box(low: float, high: float, dim: int) -> Independent:
    return Independent(Uniform(torch.full((dim,), low), torch.full((dim,), high)), 1)


def _inside(theta: Tensor, low: float, high: float) -> Tensor:
    return ((theta > low) & (theta < high)).all(-1)


class Task:
    r"""A task: its name, the sizes of :math:`\theta` and :math:`x`, and a box prior's
    bounds (``None`` for an unbounded prior)."""

    name = ""
    dim_theta = dim_x = 0
    box: tuple[float, float] | None = None
    prior: torch.distributions.Distribution

    def sample_prior(self, n: int, generator: torch.Generator) -> Tensor:
        low, high = self.box
        return low + (high - low) * torch.rand(n, self.dim_theta, generator=generator)

    def simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def log_posterior(self, theta: Tensor, x: Tensor, generator: torch.Generator) -> Tensor:
        r"""The exact :math:`\log p(\theta_i \mid x_i)` of each pair (float64), where the
        task has it; its negative mean over test pairs is the lowest expected held-out NLL
        an estimator can reach on them."""

        raise NotImplementedError


class TwoMoons(Task):
    r"""Two moons (sbibm ``two_moons``). :math:`\theta \sim U(-1, 1)^2`;
    :math:`a \sim U(-\pi/2, \pi/2)`, :math:`r \sim N(0.1, 0.01^2)`,
    :math:`p = (r \cos a + 0.25, r \sin a)` and
    :math:`x = p + (-|\theta_1 + \theta_2| / \sqrt 2, (\theta_2 - \theta_1) / \sqrt 2)`.

    Reference: the map :math:`\theta \mapsto (s, d) = (|\theta_1 + \theta_2|,
    \theta_2 - \theta_1) / \sqrt 2` keeps volume on each branch and the prior is flat, so
    the posterior is exact by inversion: draw :math:`p`, set :math:`s = p_1 - x_1`,
    :math:`d = x_2 - p_2`, reject :math:`s < 0`, take either sign of
    :math:`\theta_1 + \theta_2` with probability 1/2, reject outside the prior (sbibm's
    construction, with the :math:`s < 0` rejection made explicit).
    """

    name, dim_theta, dim_x, box = "two_moons", 2, 2, (-1.0, 1.0)
    prior = _box(-1.0, 1.0, 2)

    @staticmethod
    def noise(n: int, generator: torch.Generator) -> Tensor:
        a = (torch.rand(n, generator=generator) - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(n, generator=generator)
        return torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], dim=-1)

    @staticmethod
    def mean(theta: Tensor) -> Tensor:  # the noiseless part of x
        s = theta.sum(-1).abs() / math.sqrt(2)
        return torch.stack([-s, (theta[..., 1] - theta[..., 0]) / math.sqrt(2)], dim=-1)

    def simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return self.noise(len(theta), generator) + self.mean(theta)

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log p(x \mid \theta)` (float64): the noise :math:`d = x - m(\theta) -
        (0.25, 0)` in polar coordinates has density :math:`N(|d|; 0.1, 0.01^2) / (\pi |d|)`
        on the half-plane :math:`d_1 > 0`."""

        theta, x = theta.double(), x.double()
        d = x - self.mean(theta) - torch.tensor([0.25, 0.0], dtype=x.dtype)
        r = d.norm(dim=-1)
        log_normal = -0.5 * ((r - 0.1) / 0.01) ** 2 - math.log(0.01 * math.sqrt(2 * math.pi))
        return torch.where(d[..., 0] > 0, log_normal - math.log(math.pi) - r.log(), -math.inf)

    def _shares(self, x: Tensor, generator: torch.Generator, draws: int) -> tuple[Tensor, Tensor]:
        r"""For each :math:`x`, the shares of `draws` noise draws :math:`p` whose point
        :math:`m = x - p` is in the image of the plane (:math:`m_1 \le 0`) and of the
        prior's square (also :math:`|m_1| + |m_2| \le \sqrt 2`)."""

        noise = self.noise(draws, generator).double()
        plane, square = [], []
        for chunk in x.double().split(256):
            w, v = chunk[:, None, 0] - noise[:, 0], chunk[:, None, 1] - noise[:, 1]
            left = w <= 0
            plane.append(left.double().mean(-1))
            square.append((left & (w.abs() + v.abs() <= math.sqrt(2))).double().mean(-1))
        return torch.cat(plane), torch.cat(square)

    def log_evidence(self, x: Tensor, generator: torch.Generator, draws: int = 20_000) -> Tensor:
        r""":math:`\log p(x)`: :math:`m(\theta) = (-|\theta_1 + \theta_2|, \theta_2 -
        \theta_1) / \sqrt 2` is uniform with density 1/2 on the left half of the square
        :math:`|u| + |v| \le \sqrt 2`, so :math:`p(x)` is half the probability that
        :math:`x` minus the noise falls there, estimated from `draws` noise draws."""

        return (0.5 * self._shares(x, generator, draws)[1]).log()

    def box_cut(self, x: Tensor, generator: torch.Generator, draws: int = 20_000) -> Tensor:
        r"""The share of the likelihood's two arcs that the prior's square cuts off at
        each :math:`x`, :math:`1 - \int_{[-1, 1]^2} p(x \mid \theta) \, d\theta /
        \int_{\mathbb{R}^2} p(x \mid \theta) \, d\theta`. The posterior is the arcs
        cut to the square and renormalised: a density that fits the arcs exactly but not
        the square's edges scores :math:`-\log(1 - \text{cut})` nats above it at
        :math:`x`. By the map of :meth:`log_evidence` (two branches, volume kept), the
        share of the noise draws in the plane's image that fall outside the square's."""

        plane, square = self._shares(x, generator, draws)
        return 1 - square / plane.clamp(min=1 / draws)

    def log_posterior(self, theta: Tensor, x: Tensor, generator: torch.Generator) -> Tensor:
        r"""Bayes' rule, :math:`\log p(x \mid \theta) + \log p(\theta) - \log p(x)`, with
        the uniform prior's density 1/4."""

        return self.log_likelihood(theta, x) - math.log(4) - self.log_evidence(x, generator)

    def reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        found, total = [], 0
        while total < n:
            p = self.noise(4 * n, generator)
            s, d = p[:, 0] - x_o[0], x_o[1] - p[:, 1]
            sign = torch.where(torch.rand(4 * n, generator=generator) < 0.5, -1.0, 1.0)
            theta = torch.stack([sign * s - d, sign * s + d], dim=-1) / math.sqrt(2)
            theta = theta[(s >= 0) & _inside(theta, -1, 1)]
            found.append(theta)
            total += len(theta)
        return torch.cat(found)[:n]


class GaussianLinear(Task):
    r"""Gaussian linear (sbibm ``gaussian_linear``), 10-d. :math:`\theta \sim N(0, 0.1 I)`,
    :math:`x \sim N(\theta, 0.1 I)`.

    Reference: analytic, :math:`p(\theta \mid x) = N(x / 2, 0.05 I)` (precisions 10 + 10).
    """

    name, dim_theta, dim_x = "gaussian_linear", 10, 10
    prior = MultivariateNormal(torch.zeros(10), 0.1 * torch.eye(10))

    def sample_prior(self, n: int, generator: torch.Generator) -> Tensor:
        return math.sqrt(0.1) * torch.randn(n, 10, generator=generator)

    def simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return theta + math.sqrt(0.1) * torch.randn(theta.shape, generator=generator)

    @staticmethod
    def posterior(x_o: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns the analytic posterior's mean and covariance."""

        cov = torch.linalg.inv(torch.eye(10) / 0.1 + torch.eye(10) / 0.1)
        return cov @ (x_o / 0.1), cov

    def log_posterior(self, theta: Tensor, x: Tensor, generator: torch.Generator) -> Tensor:
        r"""The analytic posterior's log-density."""

        _, cov = self.posterior(x[0])
        cov = cov.double()
        mean = x.double() / 0.1 @ cov  # cov is symmetric
        return MultivariateNormal(mean, cov).log_prob(theta.double())

    def reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        mean, cov = self.posterior(x_o)
        return mean + torch.randn(n, 10, generator=generator) @ torch.linalg.cholesky(cov).T


class SLCP(Task):
    r"""SLCP, simple likelihood complex posterior (sbibm ``slcp``). :math:`\theta \sim
    U(-3, 3)^5`; :math:`m = (\theta_1, \theta_2)`, :math:`s_1 = \theta_3^2`,
    :math:`s_2 = \theta_4^2`, :math:`\rho = \tanh \theta_5`; :math:`x` is 4 independent
    draws of :math:`N(m, [[s_1^2, \rho s_1 s_2], [\rho s_1 s_2, s_2^2]])`, flattened (8-d).

    Reference: MCMC on the known likelihood. Sampling-importance-resampling from 200,000
    prior draws gives the starts of `n` random-walk Metropolis chains (Gaussian steps,
    scale adapted to the chains' spread during 500 burn-in steps), run 500 more steps;
    each chain's last state is a sample. The likelihood depends on :math:`\theta_3,
    \theta_4` through their squares only, so the signs of these two (the posterior's four
    symmetric modes) are then drawn uniformly, which is exact.
    """

    name, dim_theta, dim_x, box = "slcp", 5, 8, (-3.0, 3.0)
    prior = _box(-3.0, 3.0, 5)

    @staticmethod
    def _parameters(theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return theta[..., :2], theta[..., 2] ** 2, theta[..., 3] ** 2, torch.tanh(theta[..., 4])

    def simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        m, s1, s2, rho = self._parameters(theta)
        z = torch.randn(len(theta), 4, 2, generator=generator)
        u = z[..., 0] * s1[:, None]
        v = (rho[:, None] * z[..., 0] + (1 - rho[:, None] ** 2).sqrt() * z[..., 1]) * s2[:, None]
        return (m[:, None, :] + torch.stack([u, v], dim=-1)).flatten(1)

    def log_likelihood(self, theta: Tensor, x_o: Tensor) -> Tensor:
        m, s1, s2, rho = self._parameters(theta)
        pts = x_o.view(4, 2)
        z1 = (pts[:, 0] - m[..., None, 0]) / s1[..., None]
        z2 = (pts[:, 1] - m[..., None, 1]) / s2[..., None]
        q = (z1**2 - 2 * rho[..., None] * z1 * z2 + z2**2) / (1 - rho[..., None] ** 2)
        norm = math.log(2 * math.pi) + (s1 * s2).log() + 0.5 * (1 - rho**2).log()
        return -0.5 * q.sum(-1) - 4 * norm

    def log_target(self, theta: Tensor, x_o: Tensor) -> Tensor:
        inside = _inside(theta, -3, 3)
        value = self.log_likelihood(theta.clamp(-3, 3), x_o)
        return torch.where(inside & value.isfinite(), value, -math.inf)

    def reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        draws = self.sample_prior(200_000, generator)
        weights = torch.softmax(self.log_target(draws, x_o), 0)
        theta = draws[torch.multinomial(weights, n, True, generator=generator)]
        log_p = self.log_target(theta, x_o)
        scale = torch.full((5,), 0.1)
        for step in range(1000):
            if step < 500 and step % 50 == 0:  # adapt the step to the chains' spread
                scale = 2.38 / math.sqrt(5) * theta.std(0).clamp(min=1e-3)
            proposal = theta + scale * torch.randn(theta.shape, generator=generator)
            log_q = self.log_target(proposal, x_o)
            accept = torch.rand(n, generator=generator).log() < log_q - log_p
            theta = torch.where(accept[:, None], proposal, theta)
            log_p = torch.where(accept, log_q, log_p)
        signs = torch.where(torch.rand(n, 2, generator=generator) < 0.5, -1.0, 1.0)
        return torch.cat([theta[:, :2], theta[:, 2:4].abs() * signs, theta[:, 4:]], dim=-1)


class GaussianMixture(Task):
    r"""Gaussian mixture (sbibm ``gaussian_mixture``). :math:`\theta \sim U(-10, 10)^2`,
    :math:`x \sim 0.5\, N(\theta, I) + 0.5\, N(\theta, 0.01 I)`.

    Reference: with a flat prior the posterior is the same mixture centred on the
    observation, :math:`0.5\, N(x_o, I) + 0.5\, N(x_o, 0.01 I)`, restricted to the box:
    drawn exactly by rejection.
    """

    name, dim_theta, dim_x, box = "gaussian_mixture", 2, 2, (-10.0, 10.0)
    prior = _box(-10.0, 10.0, 2)

    @staticmethod
    def _mixture(center: Tensor, generator: torch.Generator) -> Tensor:
        n = len(center)
        scale = torch.where(torch.rand(n, 1, generator=generator) < 0.5, 1.0, 0.1)
        return center + scale * torch.randn(n, 2, generator=generator)

    def simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return self._mixture(theta, generator)

    def log_posterior(self, theta: Tensor, x: Tensor, generator: torch.Generator) -> Tensor:
        r"""The mixture centred on :math:`x`, over its mass inside the box (exact, from
        the normal distribution function)."""

        theta, x = theta.double(), x.double()
        logs, masses = [], []
        for scale in (1.0, 0.1):
            normal = torch.distributions.Normal(x, scale)
            logs.append(math.log(0.5) + normal.log_prob(theta).sum(-1))
            inside = normal.cdf(torch.tensor(10.0)) - normal.cdf(torch.tensor(-10.0))
            masses.append(0.5 * inside.prod(-1))
        return torch.logaddexp(*logs) - (masses[0] + masses[1]).log()

    def reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        found, total = [], 0
        while total < n:
            theta = self._mixture(x_o.expand(2 * n, 2), generator)
            theta = theta[_inside(theta, -10, 10)]
            found.append(theta)
            total += len(theta)
        return torch.cat(found)[:n]


TASKS: dict[str, Task] = {
    task.name: task for task in (TwoMoons(), GaussianLinear(), SLCP(), GaussianMixture())
}


def c2st(a: Tensor, b: Tensor, seed: int = 0, folds: int = 5) -> float:
    r"""Classifier two-sample test: the 5-fold cross-validated accuracy of an MLP
    (sbibm's: two hidden layers of 10 x dim ReLU units, Adam) telling the samples `a`
    from `b`, both z-scored by `a`'s mean and spread. 0.5: indistinguishable; 1: apart."""

    import numpy as np

    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    mean, std = a.mean(0), a.std(0).clamp(min=1e-12)
    data = torch.cat([(a - mean) / std, (b - mean) / std]).double().numpy()
    labels = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    width = 10 * a.shape[1]
    clf = MLPClassifier(
        hidden_layer_sizes=(width, width), max_iter=1000, random_state=seed, early_stopping=True
    )
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, data, labels, cv=split, scoring="accuracy").mean())


def coverage_levels(log_q_true: Tensor, log_q_samples: Tensor) -> Tensor:
    r"""Returns, for each test pair, the level of the smallest highest-density region of
    the estimate :math:`q` that contains the true :math:`\theta`: the share of
    :math:`q`'s own samples with a higher density than :math:`q(\theta_{true})`
    (`log_q_samples`: one row of sample log-densities per pair). The expected coverage at
    level :math:`\alpha` is the share of pairs whose level is below :math:`\alpha`;
    :math:`\alpha` itself when :math:`q` is calibrated."""

    return (log_q_samples > log_q_true[:, None]).float().mean(-1)
