r"""LUNet under torch.compile (inductor) against eager: log_prob and sampling.

    python benchmarks/compile.py [--features 784] [--batch 1024]

Prints the medians of timed calls after warm-up (compilation excluded), the ratio
eager / compiled, and the largest difference between the two results.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from functools import partial

import torch

from zuko_lu import LUNet


def median_time(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()

    torch.manual_seed(0)
    flow = LUNet(args.features, transforms=3, init="orthogonal").eval()
    x = torch.randn(args.batch, args.features)
    z = torch.randn(args.batch, args.features)

    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    print(f"Machine: {machine}, torch {torch.__version__}")
    print(f"LUNet({args.features}, transforms=3), batch {args.batch}, eval mode, no grad\n")
    print("| call | eager | compiled | eager / compiled | max abs difference |")
    print("|---|---:|---:|---:|---:|")

    calls = {
        "log_prob": (lambda v: flow().log_prob(v), x),
        "sample (inverse)": (lambda v: flow().transform.inv(v), z),
    }
    with torch.no_grad():
        for name, (fn, v) in calls.items():
            compiled = torch.compile(fn)
            diff = (compiled(v) - fn(v)).abs().max().item()  # compiles here
            eager = median_time(partial(fn, v))
            fast = median_time(partial(compiled, v))
            ms = f"{eager * 1e3:.2f} ms | {fast * 1e3:.2f} ms"
            print(f"| {name} | {ms} | {eager / fast:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
