r"""Why an sbi estimator with LU blocks trains worse on a task: trains one estimator as
:mod:`benchmarks.sbi_bench` does (same simulations, seed and sbi defaults) and prints its
held-out NLL, its NLL on its own training simulations (an overfit estimator has a much
lower one; an estimator that trains worse has both higher) and the share of its draws
outside the prior's support, as a JSON line. On two moons it also splits the held-out
NLL's excess over the true posterior's between the test pairs whose posterior the
prior's square cuts (:meth:`~benchmarks.sbi_tasks.TwoMoons.box_cut` at least 1%) and the
others, next to what a density exact on the uncut arcs would lose (``arcs_exact``).

The model is one of sbi's zuko models with :func:`zuko_lu.sbi.posterior_nn`'s keyword
arguments as JSON, for example (SLCP at 5,000 simulations, LU blocks without the data):

    python benchmarks/sbi_diagnose.py zuko_nsf '{"lu_context": false}' --task slcp

``"x_dist": "prior"`` stands for the task's prior (for sbi's
``z_score_theta="transform_to_unconstrained"``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import sbi_bench  # noqa: E402
from benchmarks.sbi_tasks import TASKS  # noqa: E402


def lost(task, log_q: torch.Tensor, theta: torch.Tensor, x: torch.Tensor) -> dict:
    r"""The held-out NLL's excess over the true posterior's (the floor of
    :func:`benchmarks.sbi_bench.floor`), as the sum of the parts from the pairs whose
    posterior the prior's square cuts and from the others (each a sum over its pairs
    divided by all pairs), and the excess of a density exact on the uncut arcs."""

    log_p = sbi_bench.true_log_posterior(task, theta, x)
    cut = task.box_cut(x, torch.Generator().manual_seed(sbi_bench.TEST_SEED + 2))
    excess, at = log_p - log_q.double(), cut >= 0.01
    return {
        "floor": round(-log_p.mean().item(), 3),
        "above_floor": round(excess.mean().item(), 3),
        "cut_pairs": round(at.double().mean().item(), 3),
        "above_floor_cut_pairs": round((excess[at].sum() / len(x)).item(), 3),
        "above_floor_other_pairs": round((excess[~at].sum() / len(x)).item(), 3),
        "arcs_exact": round(-(1 - cut).log().mean().item(), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="one of sbi's zuko models, e.g. zuko_nsf")
    parser.add_argument("options", nargs="?", default="{}", help="posterior_nn options, JSON")
    parser.add_argument("--task", default="slcp", choices=list(TASKS))
    parser.add_argument("--budget", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from zuko_lu.sbi import posterior_nn

    task = TASKS[args.task]
    theta, x = sbi_bench.simulations(task, args.budget, args.seed)
    test_theta, test_x = sbi_bench.simulations(task, 5000, sbi_bench.TEST_SEED)

    options = json.loads(args.options)
    build = posterior_nn(args.model, **sbi_bench.with_prior(options, task))
    start = time.perf_counter()
    _, estimator, epochs = sbi_bench.train_sbi(task, build, theta, x, args.seed, args.max_epochs)
    seconds = time.perf_counter() - start
    estimator.eval()
    with torch.no_grad():
        log_q = estimator.log_prob(test_theta[None], test_x)[0]
        held_out = -log_q.mean().item()
        training = -estimator.log_prob(theta[None], x).mean().item()
        draws = estimator.sample((200,), test_x[:500])
        outside = (~task.prior.support.check(draws)).float().mean().item()

    row = {
        "task": args.task,
        "budget": args.budget,
        "model": args.model,
        "options": options,
        "seed": args.seed,
        "epochs": epochs,
        "held_out_nll": round(held_out, 3),
        "training_nll": round(training, 3),
        "outside_prior": round(outside, 3),
        "train_s": round(seconds),
    }
    if hasattr(task, "box_cut"):
        row |= lost(task, log_q, test_theta, test_x)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
