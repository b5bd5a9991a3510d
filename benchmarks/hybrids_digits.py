r"""LU blocks inside zuko flows on sklearn's digits: NSF vs LUNSF and MAF vs LUMAF.

Each pair trains with the same seeds, steps, batches and optimizer on the 8x8 digits
(64-d, 17 levels; dequantised, logit, standardised), and reports test bits/dim in pixel
space (mean over seeds of the mean over 5 dequantisation draws) and time per step.

    python benchmarks/hybrids_digits.py [--steps 2000] [--seeds 0 1 2] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import zuko

from zuko_lu import LUMAF, LUNSF
from zuko_lu.experiments.data import load
from zuko_lu.experiments.metrics import evaluate_nll
from zuko_lu.experiments.preprocess import ImagePreprocess

MODELS = {
    "MAF": lambda D: zuko.flows.MAF(D, transforms=4, hidden_features=(256, 256)),
    "LUMAF": lambda D: LUMAF(D, transforms=4, hidden_features=(256, 256)),
    "NSF": lambda D: zuko.flows.NSF(D, transforms=4, hidden_features=(256, 256)),
    "LUNSF": lambda D: LUNSF(D, transforms=4, hidden_features=(256, 256)),
}


def run(name: str, seed: int, steps: int, batch: int, lr: float) -> dict:
    data = load("digits", seed=0)
    pre = ImagePreprocess(data.levels).fit(data.train, torch.Generator().manual_seed(0))

    torch.manual_seed(seed)
    flow = MODELS[name](data.features)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)

    best, best_state = float("inf"), None
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(data.train), (batch,), generator=gen)
        y, ladj = pre(data.train[idx], generator=gen)
        loss = -(flow().log_prob(y) + ladj).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        opt.step()
        sched.step()

        if (step + 1) % (steps // 10) == 0:  # keep the best validation state
            flow.eval()
            val, _ = evaluate_nll(lambda y: flow().log_prob(y), data.val, pre, draws=1)
            flow.train()
            if val < best:
                best = val
                best_state = {k: v.clone() for k, v in flow.state_dict().items()}
    per_step = (time.perf_counter() - start) / steps

    flow.load_state_dict(best_state)
    flow.eval()
    gen = torch.Generator().manual_seed(1234)
    test, spread = evaluate_nll(lambda y: flow().log_prob(y), data.test, pre, 5, gen)
    params = sum(p.numel() for p in flow.parameters())
    return {"test": test, "spread": spread, "step_ms": 1e3 * per_step, "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{args.steps} steps, batch {args.batch}, seeds {args.seeds}",
        "",
        "| model | parameters | test bits/dim (mean over seeds) | per seed | ms / step |",
        "|---|---:|---:|---|---:|",
    ]
    for name in MODELS:
        results = [run(name, s, args.steps, args.batch, args.lr) for s in args.seeds]
        tests = [r["test"] for r in results]
        per_seed = ", ".join(f"{t:.3f}" for t in tests)
        step = statistics.median(r["step_ms"] for r in results)
        lines.append(
            f"| {name} | {results[0]['params']:,} | {statistics.mean(tests):.3f} "
            f"| {per_seed} | {step:.1f} |"
        )
        print(lines[-1], flush=True)

    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
