r"""Measures the numbers quoted on the maths page (docs/maths.rst).

Usage (from the repository root; about half a minute on one core, plus the 400-digit
check if mpmath is installed)::

    python docs/measure.py
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn

from zuko_lu.experiments.data import load
from zuko_lu.experiments.preprocess import ImagePreprocess
from zuko_lu.parameters import LUParameters
from zuko_lu.transforms import LeakySoftplusTransform, LUTransform
from zuko_lu.triangular import lu_apply, lu_product


def paper_init(D: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The reference code's initialisation: masked ``nn.Linear`` weights, L with a unit
    diagonal, U with its diagonal as drawn (float64)."""

    torch.manual_seed(seed)
    L = nn.Linear(D, D).weight.detach().double().tril(-1) + torch.eye(D).double()
    U = nn.Linear(D, D).weight.detach().double().triu()
    return L, U


def condition(L: torch.Tensor, U: torch.Tensor) -> float:
    r"""The 2-norm condition number of W = L U, from the triangular inverses."""

    I = torch.eye(len(L)).double()
    Li = torch.linalg.solve_triangular(L, I, upper=False, unitriangular=True)
    Ui = torch.linalg.solve_triangular(U, I, upper=True)
    norm = lambda A: torch.linalg.matrix_norm(A, 2).item()
    return norm(L @ U) * norm(Ui @ Li)


def initialisation() -> None:
    print("## The paper's initialisation (seed 0)\n")
    print("| D | log|det W| | cond (triangular inverses) | cond (float64 SVD) | exact |")
    print("|---|---|---|---|---|")
    for D in (16, 32, 64, 128, 256, 784):
        L, U = paper_init(D)
        W = L @ U
        exact = ""
        if D <= 64:
            try:
                import mpmath
            except ImportError:
                pass
            else:
                mpmath.mp.dps = 400
                s = mpmath.svd_r(mpmath.matrix(W.tolist()), compute_uv=False)
                exact = mpmath.nstr(s[0] / s[len(s) - 1], 3)
        print(
            f"| {D} | {U.diagonal().abs().log().sum().item():.0f} | {condition(L, U):.2g} "
            f"| {torch.linalg.cond(W).item():.2g} | {exact} |"
        )

    L, U = paper_init(784)
    t = LUTransform(L.tril(-1) + U)
    x = torch.randn(1024, 784, dtype=torch.float64)
    t32 = LUTransform((L.tril(-1) + U).float())
    r32 = t32.inv(t32(x.float()))
    print(
        f"\nD = 784 round trip: float32 finite {bool(r32.isfinite().all())}, "
        f"float64 max error {(t.inv(t(x)) - x).abs().max().item():.2g}"
    )
    for init in ("identity", "orthogonal"):
        torch.manual_seed(0)
        print(f"ours, {init}: cond(W) = {LUParameters(784, init=init).condition_number():.6f}")


def activation() -> None:
    print("\n## The leaky-softplus inverse over [-1e4, 1e4]\n")
    t = LeakySoftplusTransform(0.1)
    n = 2_000_001
    xs = torch.cat(
        [
            torch.sinh(torch.linspace(-4, 4, n, dtype=torch.float64) * 2.5),
            torch.linspace(-10, 10, n, dtype=torch.float64),
        ]
    )
    xs = xs[xs.abs() <= 1e4]

    def exact(y: torch.Tensor) -> torch.Tensor:  # 50 Newton steps in float64
        a = 0.1
        x = torch.where(y > 0, y, y / a)
        for _ in range(50):
            f = a * x + (1 - a) * nn.functional.softplus(x, threshold=40) - y
            x = x - f / (a + (1 - a) * torch.sigmoid(x))
        return x

    for dtype in (torch.float32, torch.float64):
        x = xs.to(dtype)
        y = t(x)
        xh = t.inv(y)
        xr = exact(y.double())
        error = (xh.double() - xr).abs() / xr.abs().clamp(min=1)
        trip = (xh - x).abs() / x.abs().clamp(min=1)
        z = y[:1_000_000].clone()
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            t.inv(z)
            times.append(time.perf_counter() - t0)
        print(
            f"{dtype}: {len(xs):,} points, error {error.max().item():.2g} at x = "
            f"{xr[error.argmax()].item():.3g}, round trip {trip.max().item():.2g}; "
            f"inverse of 1e6 values {1e3 * sorted(times)[0]:.1f} ms (best of 15)"
        )


def convergence() -> None:
    print("\n## Halley against Newton from the same start (float64, worst relative error)\n")
    x = torch.cat([torch.linspace(-1e4, 1e4, 400_001), torch.linspace(-60, 60, 400_001)])
    x = x.double()
    for alpha in (0.9, 0.5, 0.1, 0.05, 0.03, 0.01, 1e-3, 1e-4):
        t = LeakySoftplusTransform(alpha)
        y = t(x)
        error = lambda v: ((v - x).abs() / x.abs().clamp(min=1)).max().item()  # noqa: E731
        halley, newton = torch.empty_like(y), torch.empty_like(y)
        t._start_(halley, y, alpha, t._tangents(alpha, y), torch.empty_like(y))
        newton.copy_(halley)
        buffers = [torch.empty_like(y) for _ in range(3)]
        errors, lowest = {"halley": [error(halley)], "newton": [error(newton)]}, 1.0
        for _ in range(5):
            s = torch.sigmoid(halley)  # the denominator over phi'^2, before the step
            f, d = t(halley) - y, alpha + (1 - alpha) * s
            lowest = min(lowest, (1 - 0.5 * f * (1 - alpha) * s * (1 - s) / d**2).min().item())
            t._halley_(halley, y, alpha, 1 - alpha, *buffers)
            newton -= (t(newton) - y) / (alpha + (1 - alpha) * torch.sigmoid(newton))
            errors["halley"].append(error(halley))
            errors["newton"].append(error(newton))
        for name, e in errors.items():
            print(f"alpha {alpha:g}, {name}: " + ", ".join(f"{v:.1e}" for v in e))
        print(f"alpha {alpha:g}: lowest denominator / phi'^2 {lowest:.2f}")


def cache() -> None:
    print("\n## Cached inverse against triangular solves (float32, 1024 rows)\n")
    for D, init, scale in (
        (256, "identity", 0.02),
        (256, "orthogonal", 0.02),
        (256, "identity", 0.1),
        (784, "identity", 0.02),
        (784, "orthogonal", 0.0),
    ):
        torch.manual_seed(0)
        p = LUParameters(D, init=init)
        with torch.no_grad():
            p.R.add_(scale * torch.randn(D, D))
            x = torch.randn(1024, D)
            t = p()
            y = t(x)
            solves = (t.inv(y) - x).abs().max().item()
            cached = (p().precompute().inv(y) - x).abs().max().item()
        print(
            f"D = {D}, {init}, noise {scale}: cond {p.condition_number():.3g}, "
            f"solves {solves:.2g}, cached {cached:.2g}"
        )


def logit_jacobian() -> None:
    print("\n## The logit's log-Jacobian on the shipped MNIST test digits\n")
    x = load("mnist").test.double()
    D = x.shape[-1]
    for lam in (1e-6, 0.05):
        g = torch.Generator().manual_seed(0)
        _, ladj = ImagePreprocess(256, lam=lam)(x, generator=g)
        print(f"lambda = {lam:g}: {ladj.mean().item() / (D * math.log(2)):+.3f} bits/dim")


def _dense_product(LU: torch.Tensor) -> torch.Tensor:
    U = LU.triu()
    return U.addmm(LU.tril(-1), U)


def _dense_apply(x: torch.Tensor, LU: torch.Tensor) -> torch.Tensor:
    y = nn.functional.linear(x, LU.triu())
    return y + nn.functional.linear(y, LU.tril(-1))


def _products_ms(D: int, repeats: int) -> dict[str, float]:
    LU = (torch.eye(D) + 0.01 * torch.randn(D, D)).requires_grad_()
    G, x, g = torch.randn(D, D), torch.randn(64, D), torch.randn(64, D)
    calls = {
        "W dense": lambda: _dense_product(LU).backward(G),
        "W panels": lambda: lu_product(LU).backward(G),
        "apply dense": lambda: _dense_apply(x, LU).backward(g),
        "apply panels": lambda: lu_apply(x, LU).backward(g),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):  # in turns, so that background load hits all alike
        for k, f in calls.items():
            start = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - start)
    return {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}


def products(threads: int = 2, repeats: int = 21) -> None:
    print(f"\n## Products with the factors, dense / by panels (fwd + bwd, {threads} threads)\n")
    torch.set_num_threads(threads)
    for D in (384, 784):
        ms = _products_ms(D, repeats)
        print(
            f"D = {D}: forming W {ms['W dense']:.3g} / {ms['W panels']:.3g} ms, "
            f"applying to 64 rows {ms['apply dense']:.3g} / {ms['apply panels']:.3g} ms"
        )
    torch.set_num_threads(1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    initialisation()
    activation()
    convergence()
    cache()
    logit_jacobian()
    products()
