r"""Speed of the LU 1x1 convolution in a Glow training step (issue 15, item 5).

Times, on MNIST-shaped input (1, 28, 28), float32, a training step (forward, log|det|,
backward, Adam step) of :class:`zuko_lu.glow.Glow` with LU mixing against the same flow
with a fixed channel permutation, and the same for one step of flow (ActNorm, mixing,
coupling) at the first level's shape (4, 14, 14). Also times sampling 100 images in eval
mode (the LU inverse from the eval cache). Every figure is a median of timed calls after
warm-up; the two variants take turns, so that background load hits them alike.
Target: a training step with LU mixing costs at most 1.15x one with a permutation.

Usage:
    python benchmarks/conv1x1.py [--batch 64] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from collections.abc import Callable

import torch

from zuko.lazy import Flow, UnconditionalDistribution

from zuko_lu.glow import ActNorm, ChannelPermutation, ConvCoupling, Glow, LUConv1x1

TARGET = 1.15


def step_of(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = -model().log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def one_step(shape: tuple[int, int, int], mixing: str) -> Flow:
    from zuko.distributions import DiagNormal

    mix = LUConv1x1(shape) if mixing == "lu" else ChannelPermutation(shape, "permute")
    D = shape[0] * shape[1] * shape[2]
    base = UnconditionalDistribution(DiagNormal, torch.zeros(D), torch.ones(D), buffer=True)
    return Flow([ActNorm(shape), mix, ConvCoupling(shape)], base)


def race(calls: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    for f in calls.values():  # warm-up
        f()
        f()
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {platform.machine()} {platform.processor() or ''}, "
        f"{args.threads} thread(s), batch {args.batch}, float32"
    )

    x = torch.randn(args.batch, 784)
    flows = {m: Glow((1, 28, 28), levels=2, steps=8, mixing=m) for m in ("lu", "permute")}
    t = race({m: step_of(f, x) for m, f in flows.items()}, args.repeats)
    ratio = t["lu"] / t["permute"]
    print(
        f"Glow(1x28x28, levels=2, steps=8, hidden 64) train step: lu {1e3 * t['lu']:.1f} ms, "
        f"permute {1e3 * t['permute']:.1f} ms, ratio {ratio:.3f} "
        f"({'met' if ratio <= TARGET else 'missed'}: <= {TARGET})"
    )

    s = (4, 14, 14)
    x1 = torch.randn(args.batch, 784)
    steps = {m: one_step(s, m) for m in ("lu", "permute")}
    t1 = race({m: step_of(f, x1) for m, f in steps.items()}, 3 * args.repeats)
    print(
        f"one step of flow at (4, 14, 14) train step: lu {1e3 * t1['lu']:.2f} ms, "
        f"permute {1e3 * t1['permute']:.2f} ms, ratio {t1['lu'] / t1['permute']:.3f}"
    )

    def sampler(flow: Flow) -> Callable[[], None]:
        flow.eval()

        def sample() -> None:
            with torch.no_grad():
                flow().sample((100,))

        return sample

    t2 = race({m: sampler(f) for m, f in flows.items()}, 5)
    print(
        f"sampling 100 images (eval): lu {1e3 * t2['lu']:.1f} ms, "
        f"permute {1e3 * t2['permute']:.1f} ms"
    )


if __name__ == "__main__":
    main()
