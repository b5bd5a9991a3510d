r"""sbi's and lampe's zuko estimators with and without LU blocks on standard SBI tasks:
held-out NLL against the true posterior's, C2ST against the reference posterior,
expected coverage and step time, as a markdown table.

For each task (:mod:`benchmarks.sbi_tasks`), simulation budget (two per task,
:data:`BUDGETS`), model and seed:

* **training**: `budget` simulations (prior draws, seeded by the seed, the same for every
  model). sbi's models: ``NPE(prior, density_estimator=...)
  .append_simulations(theta, x).train(...)`` with sbi's defaults (batch 200, learning rate
  5e-4, 10% validation, early stopping after 20 epochs without improvement, the best
  state kept) and at most `--max-epochs` epochs; ``torch.manual_seed(seed)`` first.
  ``zuko_nsf`` is :py:`zuko_lu.sbi.posterior_nn("zuko_nsf", lu=False)` (sbi's own
  estimator), ``zuko_nsf+lu`` :py:`posterior_nn("zuko_nsf")` (LU blocks interleaved),
  and likewise ``zuko_maf`` and ``zuko_maf+lu``; sbi's default sizes (5 transforms, 50
  hidden units, 10 bins). The rows outside the default grid (:data:`SBI_MODELS` after
  those four) are described once, in the report's header
  (:func:`benchmarks.sbi_report._header`). lampe's models
  (``lampe_nsf``, ``lampe_lunsf``, ``lampe_maf``, ``lampe_lumaf``):
  ``lampe.inference.NPE`` with ``build=`` zuko's NSF/MAF or zuko-lu's LUNSF/LUMAF,
  trained with the same defaults by :mod:`benchmarks.sbi_lampe`.
* **held-out NLL**: :math:`-\log q(\theta \mid x)` of the estimator (not renormalised to
  the prior's support), mean over `--test` fresh pairs (one fixed set per task).
  **floor**: the true posterior's on the same pairs (``Task.log_posterior``), the lowest
  an estimator can reach in expectation; n/a for SLCP, whose normaliser is unknown.
* **C2ST**: at `--observations` fixed observations per task, `--samples` draws of the
  posterior (sbi's ``build_posterior().sample`` and, for lampe, the flow's draws; both
  reject draws outside the prior) against as many reference draws
  (:func:`benchmarks.sbi_tasks.c2st`); mean over the observations. 0.5 is perfect.
* **coverage**: for the first `--coverage-pairs` test pairs, the level of the smallest
  highest-density region of :math:`q` containing the true :math:`\theta` (from 500 of
  :math:`q`'s samples); expected coverage at 68% and 95% is the share of pairs below it
  (calibrated: 0.68 and 0.95; lower: overconfident).
* **step time**: one Adam step (loss, backward, step) of a fresh estimator at batch 200,
  median over 5 blocks of 20 steps, in ms.

Every run adds a JSON line to `--raw` (``results/benchmarks/sbi.jsonl``; a later run of
the same task, budget, model and seed replaces it; the file is re-read before each write,
so processes on different cores add up), and the markdown table is rendered from all of
the raw file's rows. The whole grid (4 tasks x 2 budgets x 8 models x 3 seeds) is one
command, many hours on one core; parts of it are the same command with ``--tasks``,
``--budgets`` and ``--models``:

    python benchmarks/sbi_bench.py --out results/benchmarks/sbi.md
    python benchmarks/sbi_bench.py --tasks two_moons --budgets 20000 \
        --models zuko_nsf zuko_nsf+lu --out results/benchmarks/sbi.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sbi_lampe import MODELS as LAMPE  # noqa: E402
from benchmarks.sbi_lampe import LampeEstimator, train  # noqa: E402
from benchmarks.sbi_report import BUDGETS, MODELS, render  # noqa: E402
from benchmarks.sbi_tasks import TASKS, c2st, coverage_levels  # noqa: E402

#: sbi's models: name -> (sbi's model, posterior_nn's lu, its lu_context, its other
#: options; "prior" stands for the task's prior)
FIRST = {"first": True, "conditioning": "full"}
UNCONSTRAINED = {"z_score_theta": "transform_to_unconstrained", "x_dist": "prior"}
SBI_MODELS = {
    "zuko_nsf": ("zuko_nsf", False, True, {}),
    "zuko_nsf+lu": ("zuko_nsf", True, True, {}),
    "zuko_maf": ("zuko_maf", False, True, {}),
    "zuko_maf+lu": ("zuko_maf", True, True, {}),
    # not in the default grid
    "zuko_nsf+lu_noctx": ("zuko_nsf", True, False, {}),
    "zuko_nsf+lu_first": ("zuko_nsf", FIRST, True, {}),
    "zuko_maf+lu_first": ("zuko_maf", FIRST, True, {}),
    "zuko_nsf_unc": ("zuko_nsf", False, True, UNCONSTRAINED),
    "zuko_nsf_unc+lu_first": ("zuko_nsf", FIRST, True, UNCONSTRAINED),
    "zuko_nsf_24bins": ("zuko_nsf", False, True, {"num_bins": 24}),
    "zuko_nsf_24bins+lu_first": ("zuko_nsf", FIRST, True, {"num_bins": 24}),
    "zuko_nsf+lu_first_h128": ("zuko_nsf", {**FIRST, "hidden_features": [128, 128]}, True, {}),
}
TEST_SEED, OBS_SEED, REF_SEED = 10_000, 20_000, 30_000


def with_prior(options: dict, task) -> dict:
    r"""`options` with the value "prior" replaced by the task's prior."""

    return {k: task.prior if v == "prior" else v for k, v in options.items()}


def builder(model: str, task):
    from zuko_lu.sbi import posterior_nn

    name, lu, lu_context, options = SBI_MODELS[model]
    return posterior_nn(name, lu=lu, lu_context=lu_context, **with_prior(options, task))


def step_time(model: str, task, theta: torch.Tensor, x: torch.Tensor) -> float:
    r"""Median ms per Adam step of a fresh estimator at batch 200."""

    torch.manual_seed(0)
    if model in LAMPE:
        estimator = LampeEstimator(model, theta, x)
    else:
        estimator = builder(model, task)(theta[:200], x[:200])
    opt = torch.optim.Adam(estimator.parameters(), lr=5e-4)
    times = []
    for block in range(6):
        start = time.perf_counter()
        for _ in range(20):
            loss = estimator.loss(theta[:200], x[:200]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if block:  # the first block warms up
            times.append((time.perf_counter() - start) / 20 * 1e3)
    return statistics.median(times)


def simulations(task, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""`n` prior draws and their simulations, from a generator seeded by `seed`: the
    training set of a run (its seed), the test pairs (:data:`TEST_SEED`) and the
    observations (:data:`OBS_SEED`)."""

    gen = torch.Generator().manual_seed(seed)
    theta = task.sample_prior(n, gen)
    return theta, task.simulate(theta, gen)


def observations(task, k: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    r"""The task's fixed observations and `n` reference draws at each."""

    _, x = simulations(task, k, OBS_SEED)
    ref = torch.Generator().manual_seed(REF_SEED)
    return [(x[i], task.reference(x[i], n, ref)) for i in range(k)]


def train_sbi(task, build, theta: torch.Tensor, x: torch.Tensor, seed: int, max_epochs: int):
    r"""Trains sbi's ``NPE`` with the density estimator `build` on the simulations, with
    sbi's defaults after :py:`torch.manual_seed(seed)`; returns the NPE, its trained
    estimator and the number of epochs run."""

    from sbi.inference import NPE

    torch.manual_seed(seed)
    npe = NPE(task.prior, density_estimator=build, show_progress_bars=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        estimator = npe.append_simulations(theta, x).train(max_num_epochs=max_epochs)
    return npe, estimator, int(npe._summary["epochs_trained"][-1])


def run(task_name: str, budget: int, model: str, seed: int, args, cache: dict) -> dict:
    task = TASKS[task_name]
    theta, x = simulations(task, budget, seed)

    start = time.perf_counter()
    if model in LAMPE:
        estimator, epochs = train(model, theta, x, seed, args.max_epochs)
    else:
        npe, estimator, epochs = train_sbi(
            task, builder(model, task), theta, x, seed, args.max_epochs
        )
        posterior = npe.build_posterior(estimator)
    train_s = time.perf_counter() - start
    estimator.eval()

    if task_name not in cache:
        test_theta, test_x = simulations(task, args.test, TEST_SEED)
        cache[task_name] = (
            test_theta,
            test_x,
            observations(task, args.observations, args.samples),
        )
    test_theta, test_x, obs = cache[task_name]

    with torch.no_grad():
        nll = -estimator.log_prob(test_theta[None], test_x).mean().item()
        p = args.coverage_pairs
        torch.manual_seed(seed + 1)
        draws = estimator.sample((500,), test_x[:p])
        levels = coverage_levels(
            estimator.log_prob(test_theta[None, :p], test_x[:p])[0],
            estimator.log_prob(draws, test_x[:p]).T,
        )

    scores = []
    for i, (x_o, ref) in enumerate(obs):
        torch.manual_seed(seed * 100 + i)
        if model in LAMPE:
            with torch.no_grad():
                samples = estimator.posterior_sample(args.samples, x_o, task.prior)
        else:
            samples = posterior.sample((args.samples,), x=x_o, show_progress_bars=False)
        scores.append(c2st(samples, ref, seed=i))

    return {
        "task": task_name,
        "budget": budget,
        "model": model,
        "seed": seed,
        "max_epochs": args.max_epochs,
        "epochs": epochs,
        "train_s": train_s,
        "nll": nll,
        "c2st": statistics.mean(scores),
        "c2st_each": scores,
        "cov68": (levels < 0.68).float().mean().item(),
        "cov95": (levels < 0.95).float().mean().item(),
        "ms_step": step_time(model, task, theta, x),
        "test": args.test,
        "observations": args.observations,
        "samples": args.samples,
        "coverage_pairs": args.coverage_pairs,
    }


def true_log_posterior(task, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""The true posterior's log-density at the test pairs, its evidence estimated with
    the benchmark's fixed seed (so every floor is the same)."""

    return task.log_posterior(theta, x, torch.Generator().manual_seed(TEST_SEED + 1))


def floor(task_name: str, test: int) -> float | None:
    r"""The true posterior's held-out NLL on the benchmark's test pairs, the lowest an
    estimator can reach in expectation (:py:`None` where the task has no exact density)."""

    task = TASKS[task_name]
    theta, x = simulations(task, test, TEST_SEED)
    try:
        log_p = true_log_posterior(task, theta, x)
    except NotImplementedError:
        return None
    return -log_p.mean().item()


def load(raw: Path) -> list[dict]:
    r"""The rows of the raw file (none if it does not exist)."""

    if not raw.exists():
        return []
    return [json.loads(line) for line in raw.read_text().splitlines() if line]


def save(raw: Path, row: dict) -> None:
    r"""Adds a row to the raw file, replacing the row of the same task, budget, model and
    seed; the file is read again first, so runs in parallel processes add up."""

    key = (row["task"], row["budget"], row["model"], row["seed"])
    rows = [r for r in load(raw) if (r["task"], r["budget"], r["model"], r["seed"]) != key]
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text("".join(json.dumps(r) + "\n" for r in [*rows, row]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=None, help="default: each task's BUDGETS"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=[*MODELS, *SBI_MODELS]
    )
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--observations", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--coverage-pairs", type=int, default=100)
    parser.add_argument("--raw", type=Path, default=Path("results/benchmarks/sbi.jsonl"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cache: dict = {}
    for task in [] if args.render_only else args.tasks:
        for budget in args.budgets or BUDGETS[task]:
            for seed in args.seeds:
                for model in args.models:
                    row = run(task, budget, model, seed, args, cache)
                    save(args.raw, row)
                    print(
                        f"{task} {budget} {model} seed {seed}: NLL {row['nll']:.3f} "
                        f"C2ST {row['c2st']:.3f} cov {row['cov68']:.2f}/{row['cov95']:.2f} "
                        f"{row['epochs']} epochs {row['train_s']:.0f} s "
                        f"{row['ms_step']:.1f} ms/step",
                        flush=True,
                    )

    rows = load(args.raw)
    floors = {key: floor(*key) for key in {(r["task"], r["test"]) for r in rows}}
    table = render(rows, floors, args.note)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
