r"""The maths core of LU-Net: invertible transformations built from tensors.

This module depends on :mod:`torch` alone. It is shared by the zuko face
(:mod:`zuko_lu.flows`) and the Pyro face (:mod:`zuko_lu.pyro`), so that both run the
same code.
"""

from __future__ import annotations

__all__ = [
    "LUTransform",
    "LeakySoftplusTransform",
]

import math

import torch
import torch.nn.functional as F

from torch import LongTensor, Tensor
from torch.distributions import Transform, constraints

from .compat import softplus_out
from .triangular import lu_apply, lu_product, pack

# Halley steps of the leaky-softplus inverse (in place, without autograd): (steps, slope)
# per dtype, with one more step per decade of alpha below that slope (measured:
# docs/maths.rst, "The activation and its inverse").
HALLEY_STEPS = {torch.float64: (3, 0.01)}
HALLEY_STEPS_DEFAULT = (2, 0.03)
SLOPE_MIN = 1e-4  # the smallest slope assumed when a tensor's cannot be read

Slope = float | Tensor  # one slope for all, or one per feature

# Elements per chunk of the inverse's in-place steps on the CPU (1 MiB buffers in float32;
# measured: docs/maths.rst, "Measured constants").
CHUNK = 2**18

# Points whose tangents bound the inverse from above, tightening the start.
TANGENTS = (-1.5, 1.5)


def _check_vectors(D: int, **vectors: Tensor | None) -> None:
    for name, value in vectors.items():
        if value is not None and (value.dim() < 1 or value.shape[-1] != D):
            raise ValueError(f"{name}: expected shape (*, {D}), got {tuple(value.shape)}")


class LUTransform(Transform):
    r"""Creates an LU linear transformation.

    .. math:: y = s \odot (P L U x) + b

    where :math:`L` is unit lower triangular, :math:`U` upper triangular, :math:`P` an
    optional fixed permutation and :math:`s` an optional positive scale. Its Jacobian's
    log-absolute-determinant is an :math:`O(D)` sum

    .. math:: \log |\det J| = \sum_i \log |U_{ii}| + \sum_i \log s_i .

    The forward applies one matrix product with :math:`W = P L U`; the inverse applies
    two triangular solves, :math:`x = U^{-1} L^{-1} P^T (y - b) / s`, on the batch as it
    lies (no transposes, no dense solve).

    Arguments:
        LU: The packed factors, with shape :math:`(*, D, D)`, in the layout of
            :func:`torch.linalg.lu_factor`: the strictly lower part holds :math:`L`'s
            (its unit diagonal is implied) and the upper part with the diagonal holds
            :math:`U`'s. Leading dimensions broadcast against :math:`x`.
        bias: The bias :math:`b`, with shape :math:`(*, D)`.
        log_scale: The log-scale :math:`\log s`, with shape :math:`(*, D)`: a context
            rescales a shared :math:`LU` with it (see :doc:`/maths`).
        perm: A permutation of :math:`(0, \dots, D - 1)`, with :math:`(Pv)_i = v_{p_i}`.
        kwargs: Keyword arguments passed to :class:`torch.distributions.Transform`
            (``cache_size``).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> LU = torch.eye(3) + 0.1 * torch.randn(3, 3)
        >>> t = LUTransform(LU, bias=torch.ones(3))
        >>> x = torch.randn(2, 3)
        >>> y = t(x)
        >>> torch.allclose(t.inv(y), x, atol=1e-6)
        True
        >>> t.log_abs_det_jacobian(x, y)
        tensor([-0.0461, -0.0461])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        LU: Tensor,
        bias: Tensor | None = None,
        log_scale: Tensor | None = None,
        perm: LongTensor | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)

        if LU.dim() < 2 or LU.shape[-1] != LU.shape[-2]:
            raise ValueError(
                f"LU: expected a square matrix of shape (*, D, D), got {tuple(LU.shape)}"
            )

        _check_vectors(LU.shape[-1], bias=bias, log_scale=log_scale)

        if perm is not None and perm.shape != (LU.shape[-1],):
            raise ValueError(f"perm: expected shape ({LU.shape[-1]},), got {tuple(perm.shape)}")

        self.LU = LU
        self.bias = bias
        self.log_scale = log_scale
        self.perm = perm
        # U's diagonal and log |U_ii| when kept apart from LU (see _from_parts)
        self.log_diag = None
        self.diag = None
        self._packed = None
        self._W = None
        self._W_inv = None
        self._c_inv = None
        self._ladj_cached = None

    @classmethod
    def _from_parts(
        cls,
        LU: Tensor,
        bias: Tensor | None = None,
        log_scale: Tensor | None = None,
        perm: LongTensor | None = None,
        *,
        log_diag: Tensor,
        diag: Tensor,
        **kwargs,
    ) -> LUTransform:
        # The private path of LUParameters: U's diagonal `diag` kept apart from LU, whose
        # own diagonal is then not read (the products never copy LU to put it in), and
        # log |U_ii| as the parameters have it. Both with shape (*, D).
        t = cls(LU, bias, log_scale, perm, **kwargs)
        _check_vectors(t.features, log_diag=log_diag, diag=diag)
        t.log_diag, t.diag = log_diag, diag
        return t

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(features={self.features})"

    @property
    def features(self) -> int:
        return self.LU.shape[-1]

    @property
    def packed(self) -> Tensor:
        r"""The packed factors, with :math:`U`'s diagonal in place."""

        if self._packed is None:
            self._packed = pack(self.LU, self.diag)

        return self._packed

    @property
    def weight(self) -> Tensor:
        r"""The matrix :math:`W = P L U`, formed once per transformation."""

        if self._W is None:
            W = lu_product(self.LU, self.diag)

            if self.perm is not None:
                W = W[..., self.perm, :]

            self._W = W

        return self._W

    def precompute(self) -> LUTransform:
        r"""Forms :math:`W`, :math:`W^{-1}` and :math:`\log |\det W|` once, for a
        transformation that is applied many times (eval mode), and returns it.

        Afterwards the inverse is one matrix product, :math:`x = W^{-1} y - W^{-1} b`,
        as cheap as the forward. :math:`W^{-1} = U^{-1} L^{-1} P^T` is formed by
        triangular solves in float64 and rounded once to the working precision, so
        that it is as accurate as the solves it replaces (see :doc:`/maths`).
        Batched factors and output scales keep the solves.
        """

        _ = self.weight
        self._ladj_cached = self._ladj()

        if self.LU.dim() == 2 and self.log_scale is None and self._W_inv is None:
            LU = self.packed.double()
            I = torch.eye(self.features, dtype=LU.dtype, device=LU.device)
            M = torch.linalg.solve_triangular(LU, I, upper=False, unitriangular=True)
            M = torch.linalg.solve_triangular(LU, M, upper=True)  # U^-1 L^-1

            if self.perm is not None:
                M = M[:, self.perm]  # A P^T = A[:, perm]

            self._W_inv = M.to(self.LU.dtype)
            if self.bias is not None and self.bias.dim() == 1:
                self._c_inv = -(M @ self.bias.double()).to(self.LU.dtype)

        return self

    def _check(self, x: Tensor, name: str) -> bool:
        # Attribute reads only: this runs on every call. Returns whether torch.jit.trace
        # records, where sizes are traced tensors: the size check (of the traced shape
        # only) is then skipped.
        if x.dtype is not self.LU.dtype:
            raise ValueError(f"{name}: expected dtype {self.LU.dtype}, got {x.dtype}")
        tracing = torch.jit.is_tracing()
        if x.dim() < 1 or not tracing and x.shape[-1] != self.features:
            raise ValueError(
                f"{name}: expected a last dimension of size {self.features}, got shape "
                f"{tuple(x.shape)}"
            )
        return tracing

    def _call(self, x: Tensor) -> Tensor:
        tracing = self._check(x, "x")

        LU, bias = self.LU, self.bias

        if LU.dim() > 2:
            y = (self.weight @ x.unsqueeze(-1)).squeeze(-1)
        elif self._W is None and not tracing and x.numel() < LU.shape[-1] ** 2:
            # Fewer rows than features: two products, L (U x), cost less than forming W.
            y = lu_apply(x.reshape(-1, x.shape[-1]), LU, self.diag).reshape(x.shape)
            if self.perm is not None:
                y = y[..., self.perm]
        elif self.log_scale is None and (bias is None or bias.dim() == 1):
            return F.linear(x, self.weight, bias)  # one GEMM, the bias fused
        else:
            y = F.linear(x, self.weight)

        if self.log_scale is not None:
            y = y * self.log_scale.exp()

        if bias is not None:
            y = y + bias

        return y

    def _inverse(self, y: Tensor) -> Tensor:
        self._check(y, "y")

        if self._W_inv is not None and (self.bias is None or self._c_inv is not None):
            return F.linear(y, self._W_inv, self._c_inv)

        if self.bias is not None:
            y = y - self.bias

        if self.log_scale is not None:
            y = y * (-self.log_scale).exp()

        if self.perm is not None:
            y = y[..., torch.argsort(self.perm)]

        # Row vectors: y = x U^T L^T. The solves read only the triangle they are told to,
        # so the packed matrix is passed as it is.
        LUt = self.packed.mT
        rows = LUt.dim() > 2 or y.dim() == 1  # solves need (*, 1, D) rows then

        if rows:
            y = y.unsqueeze(-2)

        z = torch.linalg.solve_triangular(LUt, y, upper=True, left=False, unitriangular=True)
        x = torch.linalg.solve_triangular(LUt, z, upper=False, left=False)

        if rows:
            x = x.squeeze(-2)

        return x

    def _ladj(self) -> Tensor:
        if self._ladj_cached is not None:
            return self._ladj_cached

        if self.log_diag is not None:
            ladj = self.log_diag.sum(dim=-1)
        else:
            d = self.LU.diagonal(dim1=-2, dim2=-1) if self.diag is None else self.diag
            ladj = d.abs().log().sum(dim=-1)

        if self.log_scale is not None:
            ladj = ladj + self.log_scale.sum(dim=-1)

        return ladj

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        ladj = self._ladj()
        if ladj.dim() == 0:
            return ladj.expand(x.shape[:-1])
        # Batched factors: the batch shape of y, which they broadcast x to.
        return ladj.expand(torch.broadcast_shapes(ladj.shape, x.shape[:-1], y.shape[:-1]))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns both :math:`y = f(x)` and :math:`\log |\det J_f(x)|`."""

        y = self(x)

        return y, self._ladj().expand(y.shape[:-1])


def slope(logit: Tensor) -> Tensor:
    r"""Returns a learnable slope :math:`\alpha = \operatorname{sigmoid}(a)`, kept inside
    :math:`[10^{-4}, 1 - 10^{-4}]` so that rounding never puts it on 0 or 1."""

    return torch.sigmoid(logit).clamp(SLOPE_MIN, 1 - SLOPE_MIN)


def softplus(x: Tensor, out: Tensor | None = None) -> Tensor:
    r"""Returns :math:`\log(1 + e^x)`, exact in float64 too: the default threshold of
    :func:`torch.nn.functional.softplus` (the identity above 20) errs by 2e-9, while
    above 40 the error, 4e-18, is below float64's resolution."""

    if out is None:
        return F.softplus(x, threshold=40.0)
    return softplus_out(x, 1.0, 40.0, out=out)


class LeakySoftplusTransform(Transform):
    r"""Creates the leaky-softplus activation of LU-Net, elementwise.

    .. math::
        y = \alpha x + (1 - \alpha) \log(1 + e^x), \qquad
        \frac{dy}{dx} = \alpha + (1 - \alpha) \sigma(x) \in (\alpha, 1)

    The map is strictly increasing and convex. Its inverse has no closed form; it is
    computed by Halley's method,

    .. math:: x \leftarrow x - \frac{f \phi'}{\phi'^2 - f \phi'' / 2}, \qquad
        f = \phi(x) - y, \quad \phi'' = (1 - \alpha) \sigma(x) (1 - \sigma(x)),

    (cubic convergence for the transcendentals of one Newton step) from an upper bound,
    the smallest inverse at :math:`y` of lines below the convex :math:`\phi` (its
    asymptotes :math:`x` and :math:`\alpha x`, and its tangents at :math:`\pm 1.5`). A
    fixed number of steps, set by the dtype and by :math:`\alpha` (no data-dependent
    loop, no host-device synchronisation; a tensor slope on an accelerator is assumed
    :math:`\geq 10^{-4}`, as :func:`slope` keeps it), reaches the working precision
    over the whole real line. The steps run in place without autograd; when a gradient
    is wanted, one Newton step is differentiated, which gives the implicit-function
    gradient :math:`\partial x / \partial y = 1 / \phi'(x)`. Under
    :func:`torch.jit.trace` the steps run out of place and the Newton step is always
    recorded, so that a trace differentiates whatever its inputs (``docs/maths.rst``).

    References:
        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        alpha: The slope :math:`\alpha \in (0, 1)` as :math:`x \to -\infty`, a float or a
            tensor that broadcasts against :math:`x` (per-feature slopes).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = LeakySoftplusTransform(alpha=0.1)
        >>> x = torch.tensor([-10.0, 0.0, 10.0])
        >>> y = t(x)
        >>> y
        tensor([-1.0000,  0.6238, 10.0000])
        >>> torch.allclose(t.inv(y), x, atol=1e-5)
        True
        >>> t.log_abs_det_jacobian(x, y)
        tensor([-2.3022e+00, -5.9784e-01, -4.0866e-05])
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, alpha: float | Tensor = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)

        if isinstance(alpha, Tensor):
            # A check would synchronise with the device; tensors are checked on the CPU.
            readable = not (torch.compiler.is_compiling() or torch.jit.is_tracing())
            if alpha.device.type == "cpu" and readable:
                if not ((alpha > 0) & (alpha < 1)).all():
                    raise ValueError("alpha: expected values in the open interval (0, 1)")
        elif not 0 < alpha < 1:
            raise ValueError(f"alpha: expected a value in the open interval (0, 1), got {alpha}")

        self.alpha = alpha

    def __repr__(self) -> str:
        alpha = self.alpha if isinstance(self.alpha, float) else "tensor"
        return f"{self.__class__.__name__}(alpha={alpha})"

    def _phi(self, x: Tensor) -> Tensor:
        return torch.lerp(softplus(x), x, self.alpha)

    def _log_dphi(self, x: Tensor) -> Tensor:
        alpha = torch.as_tensor(self.alpha, dtype=x.dtype, device=x.device)
        return torch.logaddexp(alpha.log(), torch.log1p(-alpha) + F.logsigmoid(x))

    def _call(self, x: Tensor) -> Tensor:
        return self._phi(x)

    def _inverse(self, y: Tensor) -> Tensor:
        if torch.jit.is_tracing():
            return self._inverse_traceable(y)

        alpha = self.alpha
        # The steps run without autograd; when a gradient is wanted, one Newton step from
        # the converged x runs under it: the implicit-function gradient 1 / phi'(x).
        grads = isinstance(alpha, Tensor) and alpha.requires_grad or y.requires_grad
        grads = grads and torch.is_grad_enabled()
        y0 = y

        with torch.no_grad():
            a = alpha.detach() if isinstance(alpha, Tensor) else alpha
            if isinstance(a, Tensor):  # slopes may broadcast y to a larger shape
                y = y.expand(torch.broadcast_shapes(y.shape, a.shape))
            x = torch.empty_like(y, memory_format=torch.contiguous_format)
            steps = self._steps(y.dtype)

            # On the CPU, chunks of rows whose buffers stay in cache, reused from chunk to
            # chunk (CHUNK).
            X, Y, n = x[None], y[None], 1  # one chunk, unless the slopes allow rows
            if not isinstance(a, Tensor) or a.dim() == 0:
                X, Y, n = x.view(-1, 1), y.reshape(-1, 1), CHUNK
            elif y.dim() >= 2 and a.dim() == 1:
                X, Y = x.view(-1, y.shape[-1]), y.reshape(-1, y.shape[-1])
                n = max(1, CHUNK // y.shape[-1])
            if y.device.type != "cpu" or torch.compiler.is_compiling():
                n = len(Y)  # one chunk: the kernels run in parallel, or inductor fuses them
            buffers = [torch.empty_like(Y[:n]) for _ in range(3)]
            lines = self._tangents(a, y)
            b = 1 - a

            for i in range(0, len(Y), n):
                xc, yc = X[i : i + n], Y[i : i + n]
                bc = [b[: len(yc)] for b in buffers]
                self._start_(xc, yc, a, lines, bc[0])
                for _ in range(steps):
                    self._halley_(xc, yc, a, b, *bc)

        if grads:
            d = torch.lerp(torch.sigmoid(x), torch.ones_like(x), alpha)  # phi'(x)
            return x - (self._phi(x) - y0) / d
        return x

    def _inverse_traceable(self, y: Tensor) -> Tensor:
        # The same start and Halley steps out of place (the tracer cannot differentiate
        # writes through out=), then one Newton step from the detached root, which the
        # trace records whatever requires a gradient at tracing time.
        alpha = self.alpha
        a = alpha.detach() if isinstance(alpha, Tensor) else alpha
        b, v = 1 - a, y.detach()

        x = torch.minimum(v / a, v)
        for d_inv, c in self._tangents(a, v):
            x = torch.minimum(x, v * d_inv + c)

        for _ in range(self._steps(v.dtype)):
            s = torch.sigmoid(x)
            d = a + b * s
            f = torch.lerp(softplus(x), x, a) - v
            x = x - f * d / (d * d - 0.5 * b * s * (1 - s) * f)

        x = x.detach()
        d = torch.lerp(torch.sigmoid(x), torch.ones_like(x), alpha)
        return x - (self._phi(x) - y) / d

    def _tangents(self, a: Slope, y: Tensor) -> list[tuple[Tensor, Tensor]]:
        # The tangents of phi at TANGENTS, inverted: x = y / d + c.
        lines = []
        for t in TANGENTS:
            t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
            d = a + (1 - a) * torch.sigmoid(t)
            lines.append((d.reciprocal(), t - torch.lerp(softplus(t), t, a) / d))
        return lines

    @staticmethod
    def _start_(x: Tensor, y: Tensor, a: Slope, lines: list, line: Tensor) -> None:
        # phi is convex, so it lies above its tangents and their asymptotes (x and a x):
        # the inverse of each line at y bounds the root from above.
        torch.minimum(torch.div(y, a, out=x), y, out=x)
        for d_inv, c in lines:
            torch.minimum(x, torch.mul(y, d_inv, out=line).add_(c), out=x)

    @staticmethod
    def _halley_(x: Tensor, y: Tensor, a: Slope, b: Slope, s: Tensor, d: Tensor, e: Tensor):
        # x <- x - f phi' / (phi'^2 - f phi'' / 2), with f = phi(x) - y, phi' = a + b s,
        # phi'' = b s (1 - s), s = sigmoid(x) and b = 1 - a: cubic convergence for the
        # transcendentals of a Newton step. From above the root, the denominator stays
        # above phi'^2 / 2 (measured). In place, in three buffers: fresh tensors of a
        # large batch cost more (page faults, cache misses) than the arithmetic.
        torch.sigmoid(x, out=s)
        torch.mul(s, b, out=d).add_(a)  # phi'
        f = softplus(x, out=e).lerp_(x, a).sub_(y)  # phi(x) - y
        s.addcmul_(s, s, value=-1).mul_(f).mul_(-0.5 * b).addcmul_(d, d)  # the denominator
        x.addcdiv_(f.mul_(d), s, value=-1)

    def _steps(self, dtype: torch.dtype) -> int:
        steps, slope = HALLEY_STEPS.get(dtype, HALLEY_STEPS_DEFAULT)
        # Reading a tensor's smallest slope would synchronise with an accelerator.
        a = self.alpha
        if isinstance(a, Tensor):
            readable = not (torch.compiler.is_compiling() or torch.jit.is_tracing())
            readable = readable and a.device.type == "cpu"
            a = a.detach().min().item() if readable else SLOPE_MIN
        return steps + math.ceil(max(0.0, math.log10(slope / a)))

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self._log_dphi(x)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns both :math:`y = \phi(x)` and :math:`\log \phi'(x)`."""

        return self._phi(x), self._log_dphi(x)
