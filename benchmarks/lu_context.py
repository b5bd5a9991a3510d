r"""Conditional LU blocks in the hybrids: with the context, without it, or with a lighter
hyper-network. Step time against zuko's own flow, and held-out NLL on two moons.

Variants of :class:`zuko_lu.LUMAF` (and :class:`zuko_lu.LUNSF`), 2-D theta, 2-D context:

* ``ctx64``: LU blocks conditioned on the context by a (64, 64) hyper-network
  (``lu_context=True``, zuko-lu's behaviour before issue 14);
* ``ctx16``: the same with a (16,) hyper-network (``lu={"hidden_features": (16,)}``);
* ``free``: LU blocks that do not take the context (``lu_context=False``).

Step time: one Adam step (log_prob, backward, step) at batch 256, each variant and the
plain zuko flow taking turns (blocks of 20 steps, median of the blocks' per-step times),
in one process and one thread; printed as ratios to the plain flow.

Quality: two-moons posterior (the sbi benchmark's simulator: theta ~ U(-1, 1)^2,
x = (r cos a + 0.25, r sin a) + (-|theta_1 + theta_2| / sqrt 2, (-theta_1 + theta_2) /
sqrt 2), a ~ U(-pi/2, pi/2), r ~ N(0.1, 0.01^2)); the flow learns p(theta | x) from
`--sims` simulations (90% train, 10% validation for the best state) and is scored by
the mean NLL of 5,000 held-out pairs; mean over `--seeds`.

    python benchmarks/lu_context.py [--sims 3000] [--epochs 40] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import zuko

from zuko_lu import LUMAF, LUNSF
from zuko_lu.experiments.compare import machine

HIDDEN = (50, 50)
VARIANTS = {
    "ctx64": {"lu_context": True},
    "ctx16": {"lu_context": True, "lu": {"hidden_features": (16,)}},
    "free": {"lu_context": False},
}
FAMILIES = {
    "MAF": (zuko.flows.MAF, LUMAF),
    "NSF": (zuko.flows.NSF, LUNSF),
}


def simulate(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Returns n pairs (theta, x) of the two-moons simulator."""

    theta = torch.rand(n, 2, generator=generator) * 2 - 1
    a = (torch.rand(n, generator=generator) - 0.5) * math.pi
    r = 0.1 + 0.01 * torch.randn(n, generator=generator)
    p = torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], dim=-1)
    s = theta.sum(-1).abs() / math.sqrt(2)
    d = (theta[:, 1] - theta[:, 0]) / math.sqrt(2)
    return theta, p + torch.stack([-s, d], dim=-1)


def build(family: str, variant: str | None, transforms: int = 3) -> torch.nn.Module:
    plain, lu = FAMILIES[family]
    if variant is None:
        return plain(2, 2, transforms=transforms, hidden_features=HIDDEN)
    return lu(2, 2, transforms=transforms, hidden_features=HIDDEN, **VARIANTS[variant])


def step_times(family: str, rounds: int = 30, block: int = 20) -> dict[str, float]:
    r"""Returns each variant's median time per training step over its turns, in ms."""

    torch.manual_seed(0)
    names = [None, *VARIANTS]
    flows = {n: build(family, n) for n in names}
    opts = {n: torch.optim.Adam(f.parameters(), lr=1e-3) for n, f in flows.items()}
    theta, x = torch.randn(256, 2), torch.randn(256, 2)
    times = {n: [] for n in names}

    def steps(n: str | None, k: int) -> None:
        for _ in range(k):
            loss = -flows[n](x).log_prob(theta).mean()
            opts[n].zero_grad()
            loss.backward()
            opts[n].step()

    for n in names:  # warm-up
        steps(n, 5)
    for _ in range(rounds):
        for n in names:
            start = time.perf_counter()
            steps(n, block)
            times[n].append((time.perf_counter() - start) / block * 1e3)
    return {("plain" if n is None else n): statistics.median(t) for n, t in times.items()}


def nll(family: str, variant: str | None, seed: int, sims: int, epochs: int) -> float:
    r"""Returns the held-out NLL of a flow trained on `sims` two-moons simulations."""

    theta, x = simulate(sims, torch.Generator().manual_seed(1000 + seed))
    test_theta, test_x = simulate(5000, torch.Generator().manual_seed(99))
    mu, sigma = x.mean(0), x.std(0)  # z-score the context, as sbi does
    x, test_x = (x - mu) / sigma, (test_x - mu) / sigma
    n_val = sims // 10
    val_theta, val_x, theta, x = theta[:n_val], x[:n_val], theta[n_val:], x[n_val:]

    torch.manual_seed(seed)
    flow = build(family, variant)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    best, state = float("inf"), None
    for _ in range(epochs):
        for idx in torch.randperm(len(theta), generator=gen).split(128):
            loss = -flow(x[idx]).log_prob(theta[idx]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
            opt.step()
        with torch.no_grad():
            val = -flow(val_x).log_prob(val_theta).mean().item()
        if val < best:
            best, state = val, {k: v.clone() for k, v in flow.state_dict().items()}
    flow.load_state_dict(state)
    with torch.no_grad():
        return -flow(test_x).log_prob(test_theta).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--families", nargs="+", default=["MAF", "NSF"])
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"torch {torch.__version__}, zuko {zuko.__version__}, {machine(torch.device('cpu'))}")
    print(f"2-D theta, 2-D context, 3 transforms, hidden {HIDDEN}, batch 256")
    for family in [] if args.no_timing else args.families:
        t = step_times(family)
        ratios = ", ".join(f"{n} {t[n] / t['plain']:.2f}x" for n in VARIANTS)
        print(f"step time {family} {t['plain']:.2f} ms; LU{family}/{family}: {ratios}")

    if args.no_quality:
        return
    print(f"two moons, {args.sims} simulations, {args.epochs} epochs, seeds {args.seeds}")
    for family in args.families:
        for variant in [None, *VARIANTS]:
            start = time.perf_counter()
            scores = [nll(family, variant, s, args.sims, args.epochs) for s in args.seeds]
            name = family if variant is None else f"LU{family} {variant}"
            each = " ".join(f"{v:.3f}" for v in scores)
            print(
                f"{name:14s} held-out NLL {statistics.mean(scores):.3f} ({each}) "
                f"[{time.perf_counter() - start:.0f} s]",
                flush=True,
            )


if __name__ == "__main__":
    main()
