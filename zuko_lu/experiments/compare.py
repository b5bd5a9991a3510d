r"""Comparisons of LU-Net with baselines on the same data, split and training budget.

Every model is trained by :func:`zuko_lu.experiments.runs.train_run` with the same configuration,
behind the same preprocessing (for images: dequantisation, logit and per-dimension
standardisation, whose log-Jacobian is in every likelihood). Fairness choices:

* Parameter counts: each baseline's hidden width :math:`h` (two hidden layers) is
  chosen so that its count is closest to LU-Net's (see
  :func:`zuko_lu.experiments.models.match_hidden`), with :math:`h \ge 16`; the counts are reported.
  RealNVP gets 4 coupling transforms, the others their builders' defaults (see
  :data:`zuko_lu.experiments.config.COMPARE_OPTIONS`).
* Spline bound: zuko's splines are the identity outside :math:`[-B, B]` (:math:`B = 5`
  by default); standardised logit pixels reach about :math:`\pm 14`, so NSF's bound is
  set to hold every training input (see :func:`zuko_lu.experiments.models.nsf_bound`).
* Timing: the best checkpoint in eval mode without gradients, one warm-up call, then the
  median of repeats, synchronising CUDA. Density evaluation is :py:`log_prob` of a batch
  of test examples in model space; sampling draws a batch from the base and inverts the
  flow. In eval mode LU-Net reuses :math:`W` and :math:`W^{-1}` formed at the warm-up,
  as a deployed model would. Training time per epoch is the median over epochs, and
  includes the validation pass.
"""

from __future__ import annotations

__all__ = [
    "compare",
    "folder",
    "machine",
    "markdown",
    "sizes",
    "timed",
]

import inspect
import math
import os
import platform
import re
import statistics
import sys
import time

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import checkpoint as ckpt
from .config import COMPARE_OPTIONS, DRAWS, TrainConfig
from .distributed import resolve_device
from .models import accepts, build, count_parameters, match_hidden, parse_model
from .plots import run_pictures
from .runs import describe, load_data, train_run
from .sampling import draw, log_prob_fn
from .training import DivergedError


def sizes(
    models: list[str],
    features: int,
    *,
    lunet: dict[str, Any] | None = None,
    match: bool = True,
) -> dict[str, dict[str, Any]]:
    r"""Returns each model's keyword arguments: LU-Net's as given, the others' options
    given with their names (:py:`"glow:mixing=permute"`, see
    :func:`zuko_lu.experiments.models.parse_model`) and their hidden widths matched to
    LU-Net's parameter count when `match` (and possible, and not given)."""

    lunet = dict(lunet or {})
    with torch.random.fork_rng():
        target = count_parameters(build("lunet", features, **lunet))

    kwargs = {}
    for label in models:
        name, given = parse_model(label)
        if label == "lunet":
            kwargs[label] = lunet
            continue
        kw = {**COMPARE_OPTIONS.get(name, {}), **given}
        if match and "hidden_features" not in kw and accepts(name, "hidden_features", [16, 16]):
            h, _ = match_hidden(name, features, target, **kw)
            kw["hidden_features"] = [h, h]
        if "bound" not in kw and accepts(name, "bound", 5.0):
            kw["bound"] = "auto"
        kwargs[label] = kw
    return kwargs


def folder(label: str) -> str:
    r"""Returns the run folder's name of a model written :py:`NAME:KEY=VALUE,...`.

    Example:
        >>> folder("glow:mixing=permute,steps=4")
        'glow-mixing-permute-steps-4'
    """

    return re.sub(r"[^\w.]+", "-", label).strip("-")


def compare(
    spec: dict[str, Any],
    models: list[str],
    config: TrainConfig,
    out: str | Path,
    *,
    lunet: dict[str, Any] | None = None,
    match: bool = True,
    device: str = "auto",
    draws: int = DRAWS,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    r"""Trains and times several models on one dataset; writes :py:`compare.md`,
    :py:`compare.json`, a picture of every model's samples side by side, and one run
    folder per model.

    Arguments:
        spec: The dataset (see :func:`zuko_lu.experiments.runs.data_spec`).
        models: The models' names.
        config: The training configuration shared by all models.
        out: The output folder.
        lunet: LU-Net's options (e.g. :py:`{"transforms": 12}`).
        match: Whether to match the baselines' parameter counts to LU-Net's.
        device: The device.
        draws: The dequantisation draws of the test evaluation.
        progress: Whether to show progress bars.
        log: Where messages go.

    Returns:
        One row per model (as in :py:`compare.json`); a model that diverged has
        :py:`None` for its test score and timings.
    """

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(spec)
    kwargs = sizes(models, data.features, lunet=lunet, match=match)
    dev = resolve_device(device)

    rows, pictures = [], []
    for name in models:
        log(f"== {name}")
        try:
            m = train_run(
                spec,
                parse_model(name)[0],
                kwargs[name],
                config,
                out / folder(name),
                device=device,
                draws=draws,
                progress=progress,
                pictures=False,
                log=log,
            )
        except DivergedError as e:
            log(f"{name}: {e}")
            rows.append({"model": name, "kwargs": kwargs[name], "test": None})
            continue
        row, samples, flow, pre = _measure(name, m, data, out=out / folder(name), dev=dev)
        rows.append(row)
        pictures.append((name, flow, pre, samples))
        log(
            f"{name}: test {row['test']:.4f} {m['test']['unit']}, "
            f"{row['parameters']:,} parameters, {row['epoch_s']:.2f} s/epoch"
        )

    meta = _meta(spec, data, config, match=match, draws=draws, dev=dev)
    ckpt.write_json(out / "compare.json", {**meta, "rows": rows})
    text = markdown(rows, meta)
    ckpt.write_atomic(out / "compare.md", lambda f: f.write(text.encode()))
    _panels(pictures, data, out)
    return rows


def _meta(
    spec: dict[str, Any],
    data: Any,
    config: TrainConfig,
    *,
    match: bool,
    draws: int,
    dev: torch.device,
) -> dict[str, Any]:
    r"""What a comparison ran: data, metric, configuration, machine, command, versions."""

    metric, unit = describe(data)
    return {
        "data": spec,
        "metric": metric,
        "unit": unit,
        "config": vars(config),
        "match": match,
        "draws": draws,
        "device": str(dev),
        "machine": machine(dev),
        "command": " ".join(["zuko-lu", *sys.argv[1:]]) if sys.argv else "",
        "date": time.strftime("%Y-%m-%d"),
        "versions": ckpt.versions(),
    }


def _measure(
    name: str, m: dict[str, Any], data: Any, *, out: Path, dev: torch.device
) -> tuple[dict[str, Any], torch.Tensor, nn.Module, nn.Module]:
    r"""Times a trained model's density and sampling, draws its pictures; returns its
    row, its samples, and the model and preprocessing on `dev`."""

    flow, pre = ckpt.restore(ckpt.load(out / "checkpoint.pt"))
    flow, pre = flow.to(dev), pre.to(dev)
    x = data.test[:1000].to(dev)
    n = 100 if data.kind == "image" else 1000
    kept = {}

    def sample() -> None:
        kept["x"] = draw(flow, pre, n)

    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        y, _ = pre(x, torch.Generator().manual_seed(0))
        density_s = timed(lambda: flow().log_prob(y), dev) / len(x)
        sample_s = timed(sample, dev, repeats=3, warmup=lambda: draw(flow, pre, 2)) / n
    samples = kept["x"][:64].cpu() if data.kind == "image" else kept["x"].cpu()
    caption = f"{name} on {data.name}, epoch {m['best_epoch']}"
    run_pictures(flow, pre, data, m["history"], m["test"]["unit"], out, samples, caption=caption)
    row = {
        "model": name,
        "kwargs": m["model"]["kwargs"],
        "parameters": m["model"]["parameters"],
        "test": m["test"]["mean"],
        "test_std": m["test"]["std"],
        "val": m["val"],
        "epochs": m["epochs"],
        "best_epoch": m["best_epoch"],
        "stopped": m["stopped"],
        "epoch_s": m["epoch_time_s"],
        "sample_ms": 1e3 * sample_s,
        "density_ms": 1e3 * density_s,
    }
    return row, samples, flow, pre


def timed(
    fn: Callable[[], Any],
    device: torch.device,
    *,
    repeats: int = 5,
    budget: float = 60.0,
    warmup: Callable[[], Any] | None = None,
) -> float:
    r"""Returns the median wall time of :py:`fn()` in seconds, after a warm-up call,
    synchronising CUDA around each call.

    Arguments:
        fn: The function to time.
        device: The device whose queue to synchronise.
        repeats: The number of timed calls, fewer once `budget` seconds are spent (at
            least one).
        budget: The time after which no more calls are started.
        warmup: The warm-up call (:py:`fn` by default), e.g. a smaller batch for a slow
            sampler.

    Example:
        >>> timed(lambda: sum(range(1000)), torch.device("cpu")) < 1.0
        True
    """

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    (warmup or fn)()
    sync()
    times = []
    while len(times) < repeats and sum(times) < budget:
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine(device: torch.device) -> str:
    r"""Returns a one-line description of the machine."""

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    r"""Returns the comparison as a markdown table with its provenance."""

    spec, config = meta["data"], meta["config"]
    data = spec["name"] + ("" if spec.get("class_") is None else f", class {spec['class_']}")
    lines = [
        f"Test {meta['metric']}{'' if meta['metric'] == meta['unit'] else ' in ' + meta['unit']}"
        f" (lower is better) on {data}; "
        f"best-validation checkpoint of each model.",
        "",
        f"| model | test {meta['unit']} | parameters | train s/epoch | sampling ms/image "
        f"| density ms/image | epochs (best) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["test"] is None:
            lines.append(f"| {r['model']} | diverged | | | | | |")
            continue
        spread = f" ± {r['test_std']:.3f}" if r["test_std"] else ""
        lines.append(
            f"| {r['model']} | {r['test']:.3f}{spread} | {r['parameters']:,} | "
            f"{r['epoch_s']:.2f} | {r['sample_ms']:.3g} | {r['density_ms']:.3g} | "
            f"{r['epochs']} ({r['best_epoch']}) |"
        )
    limit = config.get("time_limit")
    lines += [
        "",
        f"Training: Adam lr {config['lr']:g} (halved after every {config['decay']} epochs "
        f"without improvement), batch {config['batch_size']}, gradient-norm "
        f"clip {config['clip'] or 'none'} (nats/dim), at most {config['epochs']} epoch(s)"
        + (f" or {limit:g} s per model" if limit else "")
        + f", patience {config['patience']}, seed {config['seed']}. "
        + _matching(rows, meta["match"]),
        f"Machine: {meta['machine']} ({meta['device']}); torch {meta['versions']['torch']}, "
        f"zuko {meta['versions']['zuko']}; {meta['date']}.",
        f"Command: `{meta['command']}`",
        "",
    ]
    return "\n".join(lines)


def _matching(rows: list[dict[str, Any]], match: bool) -> str:
    r"""Says what the parameter matching did for each baseline, and when it could not."""

    if not match:
        return "Parameter counts not matched (--no-match): each model's default sizes."
    rows = [r for r in rows if r.get("parameters") is not None]  # diverged rows have none
    target = next((r["parameters"] for r in rows if r["model"] == "lunet"), None)
    if target is None:
        if not any((r.get("kwargs") or {}).get("hidden_features") for r in rows):
            return "No hidden widths to match: each model's own sizes, counts in the table."
        return "Hidden widths matched to LU-Net's parameter count (LU-Net not in the table)."
    smallest = inspect.signature(match_hidden).parameters["minimum"].default
    notes = []
    for r in (r for r in rows if r["model"] != "lunet"):
        n, h = r["parameters"], ((r.get("kwargs") or {}).get("hidden_features") or [None])[0]
        note = f"{r['model']} {n:,} ({n / target:.3g}x, "
        if h is None:
            note += "no hidden width to match)"
        elif abs(math.log(n / target)) <= math.log(1.25):
            note += f"matched by hidden width {h})"
        elif n > target and h <= smallest:
            note += f"not matched: its smallest width {h} gives {n:,} > {target:,})"
        else:
            note += f"not matched: the closest width {h} gives {n:,})"
        notes.append(note)
    return f"Parameter counts against LU-Net's {target:,}: " + "; ".join(notes or ["-"]) + "."


def _panels(pictures: list, data: Any, out: Path) -> None:
    from . import plots

    if not plots.available() or not pictures:
        return
    if data.kind == "image":
        panels = [(name, s.reshape(-1, *data.shape)) for name, _, _, s in pictures]
        plots.image_panels(panels, data.levels, out / "samples.png")
    elif data.features == 2:
        fns = [log_prob_fn(f, p) for _, f, p, _ in pictures]
        titles = [name for name, *_ in pictures]
        plots.density(fns, data.test, [s for *_, s in pictures], out / "density.png", titles)
