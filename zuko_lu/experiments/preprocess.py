r"""Preprocessing: what stands between the data in their original units and a flow's
space, with the log-Jacobian that keeps likelihoods in the original units.

Images are dequantised and logit-transformed (:class:`ImagePreprocess`); tables are
standardised per column in float64 (:class:`TabularPreprocess`). Both are
:class:`torch.nn.Module` whose state dicts hold plain tensors and numbers, which is how
checkpoints store them.
"""

from __future__ import annotations

__all__ = [
    "ImagePreprocess",
    "TabularPreprocess",
]

import math

import torch
import torch.nn as nn

from torch import Tensor


class _Standardize(nn.Module):
    r"""Holds per-dimension :py:`mean` and :py:`std` buffers whose shapes follow the
    state dict they are loaded from (scalars :math:`0` and :math:`1` until fitted), in
    :py:`buffer_dtype` when set (else in the loaded values' dtype)."""

    buffer_dtype: torch.dtype | None = None

    def __init__(self) -> None:
        super().__init__()

        self.register_buffer("mean", torch.tensor(0.0, dtype=self.buffer_dtype))
        self.register_buffer("std", torch.tensor(1.0, dtype=self.buffer_dtype))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("mean", "std"):
            value = state_dict.get(prefix + name)
            if value is not None and value.shape != getattr(self, name).shape:
                dtype = self.buffer_dtype or value.dtype
                setattr(self, name, torch.empty(value.shape, dtype=dtype, device=self.std.device))

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

        problem = _levels_problem(x, self.levels)
        if problem:
            raise ValueError(f"images {problem}")
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
    original columns. :math:`\mu`, :math:`\sigma` and the standardisation itself are in
    float64, and only :math:`y` and the log-Jacobian are cast to the model's dtype: columns
    such as timestamps (:math:`1.7 \times 10^9 \pm 1`, which float32 rounds to steps of
    128) or values beyond float32's range (:math:`10^{39}`) keep their spread. :meth:`fit`
    refuses constant columns, whose density is degenerate (a floor on :math:`\sigma` would
    add :math:`-\log \sigma_{\min}` nats per column to every likelihood instead).

    The state dict holds :py:`mean` and :py:`std`:
    :py:`TabularPreprocess().load_state_dict(state)` restores them (float32 values of
    older checkpoints included).

    Arguments:
        dtype: The dtype of :math:`y` and of the log-Jacobian, the model's
            (:py:`None` for :func:`torch.get_default_dtype`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = 3 + 2 * torch.randn(1000, 2)
        >>> pre = TabularPreprocess().fit(x)
        >>> y, ladj = pre(x)
        >>> round(y.std().item(), 3), y.shape, ladj.shape, y.dtype
        (1.0, torch.Size([1000, 2]), torch.Size([1000]), torch.float32)
        >>> t = 1.7e9 + torch.tensor([[-1.0], [0.0], [1.0]], dtype=torch.float64)
        >>> TabularPreprocess().fit(t)(t)[0].flatten().tolist()
        [-1.0, 0.0, 1.0]
    """

    buffer_dtype = torch.float64

    def __init__(self, *, dtype: torch.dtype | None = None) -> None:
        super().__init__()

        self.dtype = dtype

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Returns :math:`y` and :math:`\log |\det \partial y / \partial x|` (the generator
        is unused: tabular data are not dequantised)."""

        y, ladj = self._standardize(x.to(self.std.dtype))
        dtype = self.dtype or torch.get_default_dtype()
        return y.to(dtype), ladj.to(dtype)

    def inverse(self, y: Tensor) -> Tensor:
        r"""Returns :math:`x = \mu + \sigma y`, in float64."""

        return self.mean + self.std * y.to(self.std.dtype)

    def fit(self, x: Tensor, eps: float = 0.0) -> TabularPreprocess:
        r"""Fits :math:`\mu` and :math:`\sigma` on the training data :math:`x` (in float64)
        and returns :py:`self`.

        Arguments:
            x: The training data, with shape :math:`(N, D)`, :math:`N \geq 2`.
            eps: A floor on :math:`\sigma` (none by default).

        Raises:
            ValueError: With a one-line message naming the column, if a column is
                constant (or varies by less than :math:`10^{-12}` of its magnitude, below
                float64's resolution) or cannot be standardised in float64.
        """

        x = x.detach().to(torch.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"expected training data of shape (N >= 2, D), got {tuple(x.shape)}")
        mean, std = x.mean(dim=0), x.std(dim=0)
        for j in range(x.shape[-1]):
            if not (math.isfinite(mean[j]) and math.isfinite(std[j])):
                top = x[:, j].abs().max().item()
                raise ValueError(
                    f"column {j} cannot be standardised in float64 (values up to {top:.3g}): "
                    "rescale it"
                )
            if not std[j] > 1e-12 * abs(mean[j]):
                raise ValueError(
                    f"column {j} is constant in the training data (every value is "
                    f"{mean[j].item():.10g}): its density is degenerate and it would add "
                    "an arbitrary constant to the likelihood; drop the column"
                )
        with torch.no_grad():
            self._fit(x, eps)
        return self


def _levels_problem(x: Tensor, levels: int) -> str:
    r"""Returns what is wrong with images :math:`x` as integer levels in
    :math:`\{0, \dots, L - 1\}` (an empty string when nothing is)."""

    if x.numel() == 0:
        return ""
    low, high = x.min().item(), x.max().item()
    if not (math.isfinite(low) and math.isfinite(high)):
        return "hold non-finite values"
    hint = f" (rescaled? pass the integer levels 0..{levels - 1})" if high <= 1 else ""
    if low < 0 or high > levels - 1:
        return f"hold values in [{low:g}, {high:g}], outside the levels 0..{levels - 1}{hint}"
    fractional = x[x != x.floor()]
    if len(fractional):
        return f"hold non-integer values (e.g. {fractional[0].item():g}), not levels{hint}"
    return ""
