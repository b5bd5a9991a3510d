r"""What the LU 1x1 convolution buys Glow: ``zuko-lu compare`` of Glow with LU mixing
against Glow with a fixed channel permutation, at an equal time budget, over seeds.

For each seed, one ``zuko-lu compare`` (same split, batches and budget for both models;
the seed also draws the split) writes its folder ``OUT/seedS``; the summary table (test
bits/dim per seed, the margin permutation - LU, its mean and spread) goes to
``OUT/summary.md`` and to stdout.

    python benchmarks/glow_mixing.py [--data mnist] [--time-limit 600] [--seeds 0 1 2]
        [--out results/compare-mnist-glow]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from pathlib import Path

from zuko_lu.experiments.cli import main as zuko_lu

MODELS = ("glow", "glow:mixing=permute")


def summary(out: Path, seeds: list[int]) -> str:
    rows = {s: json.loads((out / f"seed{s}" / "compare.json").read_text()) for s in seeds}
    meta = rows[seeds[0]]
    lines = [
        f"Glow on {meta['data']['name']}, LU 1x1 convolutions against a fixed channel "
        f"permutation, {meta['config']['time_limit']:g} s of training each "
        f"({meta['machine']}, {meta['date']}); test {meta['unit']}:",
        "",
        "| seed | glow (LU) | glow (permute) | permute - LU | epochs LU / permute "
        "| s/epoch LU / permute |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    margins = []
    for s in seeds:
        lu, perm = (next(r for r in rows[s]["rows"] if r["model"] == m) for m in MODELS)
        if lu["test"] is None or perm["test"] is None:
            lines.append(f"| {s} | {lu['test']} | {perm['test']} | diverged | | |")
            continue
        margins.append(perm["test"] - lu["test"])
        lines.append(
            f"| {s} | {lu['test']:.3f} | {perm['test']:.3f} | {margins[-1]:+.3f} | "
            f"{lu['epochs']} / {perm['epochs']} | {lu['epoch_s']:.1f} / {perm['epoch_s']:.1f} |"
        )
    if margins:
        spread = statistics.stdev(margins) if len(margins) > 1 else 0.0
        lines += ["", f"Mean margin (permute - LU): {statistics.mean(margins):+.3f} "]
        lines[-1] += f"± {spread:.3f} {meta['unit']} over {len(margins)} seeds."
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("results/compare-mnist-glow"))
    parser.add_argument("--summary-only", action="store_true", help="only redo the summary")
    args = parser.parse_args()

    for s in [] if args.summary_only else args.seeds:
        argv = [
            "compare",
            *("--data", args.data, "--models", *MODELS),
            *("--time-limit", f"{args.time_limit:g}", "--epochs", str(args.epochs)),
            *("--seed", str(s), "--out", str(args.out / f"seed{s}"), "--no-progress"),
        ]
        sys.argv = ["zuko-lu", *argv]  # the command that compare.md records
        code = zuko_lu(argv)
        if code not in (0, 1):  # 1: a model diverged, which the summary reports
            return code
    text = summary(args.out, args.seeds)
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
