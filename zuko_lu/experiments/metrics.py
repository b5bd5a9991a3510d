r"""Preprocessing and likelihoods in the units of the original data.

Images are reported in bits per dimension in pixel space, the convention of the
literature (RealNVP 1.06, Glow 1.05, MAF 1.89 on MNIST): a uniform distribution over
the :math:`L` levels of every pixel gives exactly :math:`\log_2 L` bits/dim. Tables are
reported in nats per example, in the units of the original columns.
"""

from __future__ import annotations

__all__ = [
    "ImagePreprocess",
    "TabularPreprocess",
    "bits_per_dim",
    "evaluate_nll",
]

import math

from collections.abc import Callable

import torch
import torch.nn as nn

from torch import Tensor


class _Standardize(nn.Module):
    r"""Holds per-dimension :py:`mean` and :py:`std` buffers whose shapes follow the
    state dict they are loaded from (scalars :math:`0` and :math:`1` until fitted)."""

    def __init__(self) -> None:
        super().__init__()

        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("std", torch.tensor(1.0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        for name in ("mean", "std"):
            value = state_dict.get(prefix + name)
            if value is not None and value.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(value, device=self.std.device))

        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _fit(self, y: Tensor, eps: float) -> None:
        self.mean = y.mean(dim=0).detach().clone()
        self.std = y.std(dim=0).clamp_min(eps).detach().clone()

    def _standardize(self, y: Tensor) -> tuple[Tensor, Tensor]:
        ladj = -self.std.log().expand(y.shape).sum(dim=-1)
        return (y - self.mean) / self.std, ladj


class ImagePreprocess(_Standardize):
    r"""Creates the preprocessing of images with :math:`L` levels: uniform dequantisation,
    logit transform and an optional per-dimension standardisation.

    .. math:: u = x + \epsilon, \quad \epsilon \sim \mathcal{U}[0, 1)^D, \quad
        y = \frac{\operatorname{logit}(\lambda + (1 - 2 \lambda) u / L) - \mu}{\sigma}

    The log-Jacobian is taken with respect to :math:`u`, in pixel-level units, so that
    :math:`\log p(u) = \log p(y) + \log |\det \partial y / \partial u|`.
    The default :math:`\lambda = 10^{-6}` is MAF's choice for MNIST (RealNVP used
    :math:`0.05`); :math:`\mu` and :math:`\sigma` (fitted by :meth:`fit` in logit space on
    the training set) are :math:`0` and :math:`1` until then.

    The state dict holds the buffers :py:`mean` and :py:`std` and, as extra state,
    :py:`levels` and :py:`lam`: :py:`ImagePreprocess(1).load_state_dict(state)` restores
    all four, whatever the shapes of :py:`mean` and :py:`std`.

    Arguments:
        levels: The number of levels :math:`L` of a pixel (256 for 8-bit images).
        lam: The margin :math:`\lambda` that keeps the logit finite.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randint(0, 256, (100, 784)).double()
        >>> pre = ImagePreprocess(256).fit(x)
        >>> y, ladj = pre(x)
        >>> y.shape, ladj.shape
        (torch.Size([100, 784]), torch.Size([100]))
        >>> bool((pre.to_levels(y) == x).all())
        True
    """

    def __init__(self, levels: int, lam: float = 1e-6) -> None:
        super().__init__()

        if levels < 1:
            raise ValueError(f"levels: expected an integer >= 1, got {levels}")
        if not 0 <= lam < 0.5:
            raise ValueError(f"lam: expected a value in [0, 1/2), got {lam}")

        self.levels, self.lam = int(levels), float(lam)

    def get_extra_state(self) -> dict:
        return {"levels": self.levels, "lam": self.lam}

    def set_extra_state(self, state: dict) -> None:
        self.levels, self.lam = int(state["levels"]), float(state["lam"])

    def extra_repr(self) -> str:
        return f"levels={self.levels}, lam={self.lam:g}"

    def dequantize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Returns :math:`u = x + \epsilon` with :math:`\epsilon \sim \mathcal{U}[0, 1)^D`."""

        device = x.device if generator is None else generator.device
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device)
        return x + noise.to(x.device)

    def transform(self, u: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns :math:`y` and :math:`\log |\det \partial y / \partial u|` for
        dequantised values :math:`u \in [0, L)^D`, without noise."""

        L, lam = self.levels, self.lam
        p = lam + (1 - 2 * lam) * u / L
        logit = torch.log(p) - torch.log1p(-p)
        ladj = (math.log(1 - 2 * lam) - math.log(L)) - torch.log(p) - torch.log1p(-p)
        y, ladj_std = self._standardize(logit)
        return y, ladj.sum(dim=-1) + ladj_std

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Returns :math:`y` and :math:`\log |\det \partial y / \partial u|` for integer
        pixel values :math:`x`, dequantised with fresh noise."""

        return self.transform(self.dequantize(x, generator))

    def inverse(self, y: Tensor) -> Tensor:
        r"""Returns the continuous values :math:`u \in [0, L)^D` of :math:`y`."""

        L, lam = self.levels, self.lam
        p = torch.sigmoid(y * self.std + self.mean)
        return L * (p - lam) / (1 - 2 * lam)

    def to_levels(self, y: Tensor) -> Tensor:
        r"""Returns the integer levels :math:`\lfloor u \rfloor \in \{0, \dots, L - 1\}` of
        :math:`y` (as floats), for display. In float32, :math:`u` within about
        :math:`10^{-5}` of a cell's edge may land in the next cell."""

        return self.inverse(y).floor().clamp(0, self.levels - 1)

    def fit(
        self, x: Tensor, generator: torch.Generator | None = None, eps: float = 1e-6
    ) -> ImagePreprocess:
        r"""Fits :math:`\mu` and :math:`\sigma` on the logits of dequantised training
        images :math:`x` (one noise draw) and returns :py:`self`."""

        with torch.no_grad():
            u = self.dequantize(x, generator)
            p = self.lam + (1 - 2 * self.lam) * u / self.levels
            self._fit(torch.log(p) - torch.log1p(-p), eps)
        return self


class TabularPreprocess(_Standardize):
    r"""Creates a per-dimension standardisation of tabular data.

    .. math:: y = \frac{x - \mu}{\sigma}, \quad
        \log |\det \partial y / \partial x| = -\sum_i \log \sigma_i

    so that :math:`\log p(x) = \log p(y) - \sum_i \log \sigma_i` is in the units of the
    original columns. The state dict holds :py:`mean` and :py:`std`:
    :py:`TabularPreprocess().load_state_dict(state)` restores them.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = 3 + 2 * torch.randn(1000, 2)
        >>> pre = TabularPreprocess().fit(x)
        >>> y, ladj = pre(x)
        >>> round(y.std().item(), 3), y.shape, ladj.shape
        (1.0, torch.Size([1000, 2]), torch.Size([1000]))
    """

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Returns :math:`y` and :math:`\log |\det \partial y / \partial x|` (the generator
        is unused: tabular data are not dequantised)."""

        return self._standardize(x)

    def inverse(self, y: Tensor) -> Tensor:
        r"""Returns :math:`x = \mu + \sigma y`."""

        return self.mean + self.std * y

    def fit(self, x: Tensor, eps: float = 1e-6) -> TabularPreprocess:
        r"""Fits :math:`\mu` and :math:`\sigma` on the training data :math:`x` and
        returns :py:`self`."""

        with torch.no_grad():
            self._fit(x, eps)
        return self


def bits_per_dim(log_prob_y: Tensor, ladj: Tensor, D: int) -> Tensor:
    r"""Returns the bits per dimension of images in pixel space.

    With :math:`u \in [0, L)^D` the dequantised pixels in level units and :math:`y` the
    model space,

    .. math:: \text{bits/dim} = -\frac{\log p(y) + \log |\det \partial y / \partial u|}
        {D \ln 2} = -\frac{\log_2 p(u)}{D},

    an upper bound on :math:`-\log_2 P(x) / D` for the discrete pixels :math:`x`. It equals
    the common formula with pixels scaled to :math:`[0, 1]` plus :math:`\log_2 L`, so a
    uniform density on :math:`[0, L)^D` gives exactly :math:`\log_2 L` bits/dim.

    Arguments:
        log_prob_y: The model's log-density :math:`\log p(y)`, with shape :math:`(*,)`.
        ladj: The preprocessing's :math:`\log |\det \partial y / \partial u|`, :math:`(*,)`.
        D: The number of dimensions :math:`D`.

    Returns:
        The bits/dim, with shape :math:`(*,)`.

    Example:
        >>> D, L = 784, 256
        >>> bits_per_dim(torch.tensor(-D * math.log(L)), torch.tensor(0.0), D)
        tensor(8.)
    """

    return -(log_prob_y + ladj) / (D * math.log(2))


@torch.no_grad()
def evaluate_nll(
    log_prob_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    preprocess: ImagePreprocess | TabularPreprocess,
    draws: int = 5,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> tuple[float, float]:
    r"""Returns the mean negative log-likelihood of a dataset and its spread across
    dequantisation draws: bits/dim for images (see :func:`bits_per_dim`), nats per example
    in the original units for tables.

    The mean is over draws of the mean over examples; the spread is the sample standard
    deviation of the per-draw means (:math:`0` for one draw, and for tables, which are not
    dequantised). Put the model in eval mode first.

    Arguments:
        log_prob_fn: Maps a batch of model-space values :math:`y`, :math:`(N, D)`, to their
            log-densities :math:`\log p(y)`, :math:`(N,)`.
        x: The data in original units (integer levels for images), :math:`(N, D)`.
        preprocess: The preprocessing the model was trained behind.
        draws: The number of dequantisation draws.
        generator: The random generator of the dequantisation noise.
        batch_size: The number of examples per call of :py:`log_prob_fn`.

    Returns:
        The mean and the standard deviation across draws.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randint(0, 17, (100, 64)).float()
        >>> pre = ImagePreprocess(17).fit(x)
        >>> normal = torch.distributions.Normal(0.0, 1.0)
        >>> mean, std = evaluate_nll(lambda y: normal.log_prob(y).sum(-1), x, pre, draws=3)
        >>> round(mean, 1), std > 0
        (4.1, True)
    """

    device = preprocess.std.device
    image = isinstance(preprocess, ImagePreprocess)
    results = []

    for _ in range(draws):
        total = 0.0
        for batch in x.split(batch_size):
            y, ladj = preprocess(batch.to(device), generator=generator)
            lp = log_prob_fn(y)
            nll = bits_per_dim(lp, ladj, x.shape[-1]) if image else -(lp + ladj)
            total += nll.double().sum().item()
        results.append(total / len(x))

    values = torch.tensor(results, dtype=torch.float64)
    std = values.std().item() if draws > 1 else 0.0
    return values.mean().item(), std
