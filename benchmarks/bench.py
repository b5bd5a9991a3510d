r"""Speed benchmarks of zuko-lu against one GEMM, nflows, and zuko's flows.

Measures, at batch 1024 and float32, an LU block's forward + log|det| and inverse in
eval and training modes against :func:`torch.nn.functional.linear` (the limit: one
GEMM), nflows' ``LULinear`` and zuko's ``LULinearTransform``; the leaky-softplus
activation's forward and inverse; and whole models at D = 784 (``LUNet`` against zuko's
``RealNVP``, ``MAF`` and ``NSF`` at similar parameter counts). Every figure is a median
of timed calls after warm-up; the competitors of a row take turns of about 10 ms
of calls, so that background load hits them alike. Prints markdown tables and the
targets of the issue, each met or not.

Usage:
    python benchmarks/bench.py [--quick] [--out benchmarks/results.md] [--json raw.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import statistics
import sys
import time
import warnings

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import zuko

import zuko_lu

from zuko_lu.experiments.compare import machine as describe
from zuko_lu.transforms import LeakySoftplusTransform

try:
    import nflows

    from nflows.transforms.lu import LULinear as NflowsLULinear
except ImportError:  # an optional benchmark dependency
    nflows = NflowsLULinear = None

# nflows' LULinear inverse calls torch.triangular_solve: deprecated, still there in 2.13.
warnings.filterwarnings("ignore", message="torch.triangular_solve is deprecated")
NA_NFLOWS = "n/a (pip install --no-deps nflows)"
BATCH = 1024  # N of the LU-block rows, log_prob and sampling
TRAIN_BATCH = 64  # batch of a model's training step
EPOCH_STEPS = 3600 // TRAIN_BATCH  # 56 full batches of the 3,600 training images
AR_BATCH = 16  # sampling batch of the autoregressive flows (D sequential passes)
MODEL_D = 784
CHUNK = 0.01  # seconds of calls per turn of a competitor


@dataclass
class Config:
    device: torch.device
    repeats: int  # timed calls per competitor, at least
    min_time: float  # seconds per competitor, at least
    max_time: float  # seconds per competitor, at most (slow peers)


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def compare(
    fns: dict[str, Callable[[], object]], cfg: Config, warmup: bool = True
) -> dict[str, float]:
    r"""Returns the median time of a call of each function, in seconds.

    Each function is warmed up (if `warmup`), then the functions take turns, each turn a
    chunk of about `CHUNK` seconds of calls timed one by one, until each has `cfg.repeats`
    calls and `cfg.min_time` seconds, or `cfg.max_time` seconds.
    """

    chunk = dict.fromkeys(fns, 1)
    for name, fn in fns.items() if warmup else ():  # two calls, or one if it is slow
        t = timed(fn, cfg.device)
        if t < cfg.max_time / 10:
            t = timed(fn, cfg.device)
        chunk[name] = max(1, min(cfg.repeats, int(CHUNK / t)))

    times: dict[str, list[float]] = {name: [] for name in fns}
    active = list(fns)
    while active:
        for name in list(active):
            times[name] += [timed(fns[name], cfg.device) for _ in range(chunk[name])]
            spent = sum(times[name])
            if (len(times[name]) >= cfg.repeats and spent >= cfg.min_time) or (
                spent >= cfg.max_time
            ):
                active.remove(name)

    return {name: statistics.median(ts) for name, ts in times.items()}


def bench(fn: Callable[[], object], repeats: int, min_time: float, device: str = "cpu") -> float:
    r"""Returns the median time of a call of `fn` after warm-up, in seconds."""

    cfg = Config(torch.device(device), repeats, min_time, max(10 * min_time, 1.0))
    return compare({"fn": fn}, cfg)["fn"]


def machine(device: torch.device) -> str:
    parts = [
        f"CPU: {describe(torch.device('cpu'))}",
        f"torch {torch.__version__}",
        f"zuko {importlib.metadata.version('zuko')}",
        f"nflows {importlib.metadata.version('nflows') if nflows else 'not installed'}",
    ]
    if hasattr(os, "getloadavg"):  # other work on the cores makes every figure noisy
        parts.append("load average at start {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg()))
    if device.type == "cuda":
        parts.insert(1, f"GPU: {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    raise AssertionError


def num(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{a / b:.3g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def perturb(module: nn.Module) -> nn.Module:
    r"""Moves the parameters off their identity initialisation (values do not change the
    cost of a product or a solve, but denormals or exact zeros could)."""

    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return module


def nflows_lu(D: int, cache: bool, device: torch.device) -> nn.Module | None:
    if NflowsLULinear is None:
        return None
    return perturb(NflowsLULinear(D, using_cache=cache, identity_init=True)).to(device)


def backward(y: torch.Tensor, ladj: torch.Tensor) -> None:
    (y.sum() + ladj.sum()).backward()


def lu_block(D: int, cfg: Config) -> list[dict]:
    r"""Times one LU block of width `D` against its limit and its peers."""

    dev = cfg.device
    x = torch.randn(BATCH, D, device=dev)
    W = torch.randn(D, D, device=dev) / math.sqrt(D)
    ours = perturb(zuko_lu.LULinear(D)).to(dev)
    linear = nn.Linear(D, D).to(dev)
    nf, nfc = nflows_lu(D, False, dev), nflows_lu(D, True, dev)
    LU = torch.eye(D) + 0.01 * torch.randn(D, D)
    zk = zuko.lazy.UnconditionalTransform(zuko.transforms.LULinearTransform, LU).to(dev)

    def train_linear() -> None:
        linear(x).sum().backward()

    modes = {
        "eval fwd+ladj": {
            "limit": lambda: F.linear(x, W),
            "ours": lambda: ours().call_and_ladj(x),
            "nflows": None if nf is None else (lambda: nf(x)),
            "nflows cache": None if nfc is None else (lambda: nfc(x)),
            "zuko": lambda: zk().call_and_ladj(x),
        },
        "eval inverse": {
            "limit": lambda: F.linear(x, W),
            "ours": lambda: ours().inv(x),
            "nflows": None if nf is None else (lambda: nf.inverse(x)),
            "nflows cache": None if nfc is None else (lambda: nfc.inverse(x)),
            "zuko": lambda: zk().inv(x),
        },
        "train fwd+ladj+bwd": {
            "limit": train_linear,
            "ours": lambda: backward(*ours().call_and_ladj(x)),
            "nflows": None if nf is None else (lambda: backward(*nf(x))),
            "zuko": lambda: backward(*zk().call_and_ladj(x)),
        },
        "train inverse+bwd": {
            "limit": train_linear,
            "ours": lambda: backward(*ours().inv.call_and_ladj(x)),
            "nflows": None if nf is None else (lambda: backward(*nf.inverse(x))),
        },
    }
    targets = {
        "eval fwd+ladj": 1.1,
        "eval inverse": 1.25,
        "train fwd+ladj+bwd": 1.3 * (1 + D / BATCH),
    }

    rows = []
    for mode, fns in modes.items():
        train = mode.startswith("train")
        for m in (ours, linear, zk, nf, nfc):
            if m is not None:
                m.train(train)
        fns = {k: f for k, f in fns.items() if f is not None}
        with torch.set_grad_enabled(train):
            times = compare(fns, cfg)
        ref = "nn.Linear fwd+bwd" if train else "F.linear"
        rows.append({"D": D, "mode": mode, "reference": ref, "target": targets.get(mode), **times})
    return rows


def lu_table(rows: list[dict]) -> str:
    header = ["D", "mode", "ours", "limit", "ours/limit", "target", "met"]
    header += ["nflows", "nflows/ours", "nflows cache", "nflows cache/ours", "zuko", "zuko/ours"]
    body = []
    for r in rows:
        ours, target = r["ours"], r["target"]
        met = "–" if target is None else ("met" if ours / r["limit"] <= target else "NOT met")
        line = [str(r["D"]), r["mode"], fmt(ours), f"{fmt(r['limit'])} ({r['reference']})"]
        line += [ratio(ours, r["limit"]), "–" if target is None else f"<= {target:.3g}", met]
        for peer in ("nflows", "nflows cache", "zuko"):
            missing = NA_NFLOWS if peer == "nflows" and nflows is None else "–"
            t = r.get(peer)
            line += [fmt(t) if t else missing, ratio(t, ours) if t else "–"]
        body.append(line)
    return table(header, body)


def activation(cfg: Config) -> dict:
    r"""Times the leaky-softplus forward and inverse on a (1024, 784) batch."""

    t = LeakySoftplusTransform(0.1)
    x = 3 * torch.randn(BATCH, MODEL_D, device=cfg.device)
    y = t(x)
    with torch.no_grad():
        return compare({"forward": lambda: t(x), "inverse": lambda: t.inv(y)}, cfg)


def activation_table(act: dict) -> str:
    met = "met" if act["inverse"] <= 10 * act["forward"] else "NOT met"
    row = [fmt(act["forward"]), fmt(act["inverse"]), ratio(act["inverse"], act["forward"])]
    return table(
        ["forward", "inverse", "inverse/forward", "target", "met"], [row + ["<= 10", met]]
    )


def build_models(D: int) -> dict[str, tuple[nn.Module, str]]:
    return {
        "LUNet": (zuko_lu.LUNet(D, transforms=3), "transforms=3 (3 + 1 LU blocks)"),
        "RealNVP": (
            zuko.flows.RealNVP(D, transforms=4, hidden_features=(384, 384)),
            "transforms=4, hidden (384, 384)",
        ),
        "MAF": (
            zuko.flows.MAF(D, transforms=3, hidden_features=(310, 310)),
            "transforms=3, hidden (310, 310)",
        ),
        "NSF": (
            zuko.flows.NSF(D, transforms=2, hidden_features=(64, 64)),
            "transforms=2, hidden (64, 64), 8 bins",
        ),
    }


def models(cfg: Config, autoregressive: bool) -> list[dict]:
    r"""Times whole models at D = 784: a training step, log_prob and sampling."""

    dev = cfg.device
    flows = {k: (m.to(dev), s) for k, (m, s) in build_models(MODEL_D).items()}
    x = torch.randn(BATCH, MODEL_D, device=dev)
    xb = x[:TRAIN_BATCH]

    def step(flow: nn.Module, opt: torch.optim.Optimizer) -> None:
        loss = -flow().log_prob(xb).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    steps = {}
    for name, (flow, _) in flows.items():
        opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
        steps[name] = lambda flow=flow, opt=opt: step(flow, opt)
        flow.train()
    train = compare(steps, cfg)

    for flow, _ in flows.values():
        flow.eval()
    with torch.no_grad():
        log_prob = compare({k: lambda f=f: f().log_prob(x) for k, (f, _) in flows.items()}, cfg)
        coupling = ("LUNet", "RealNVP")
        sample = compare({k: lambda k=k: flows[k][0]().sample((BATCH,)) for k in coupling}, cfg)
        sample = {k: t / BATCH for k, t in sample.items()}
        if autoregressive:
            # Thousands of small sequential passes: the first ones warm up the rest.
            slow = Config(dev, 1, 0.0, cfg.max_time)
            ar = compare(
                {k: lambda k=k: flows[k][0]().sample((AR_BATCH,)) for k in ("MAF", "NSF")},
                slow,
                warmup=False,
            )
            sample.update({k: t / AR_BATCH for k, t in ar.items()})

    rows = []
    for name, (flow, spec) in flows.items():
        params = sum(p.numel() for p in flow.parameters())
        rows.append(
            {
                "model": name,
                "spec": spec,
                "params": params,
                "train step": train[name],
                "epoch": EPOCH_STEPS * train[name],
                "log_prob/sample": log_prob[name] / BATCH,
                "sample/sample": sample.get(name),
            }
        )
    return rows


def model_table(rows: list[dict]) -> str:
    base = next(r for r in rows if r["model"] == "LUNet")
    header = ["model", "config", "params", "vs LUNet", f"train step (batch {TRAIN_BATCH})"]
    header += [f"epoch ({EPOCH_STEPS} steps)", "log_prob / sample", "sampling / sample"]
    body = []
    for r in rows:
        off = r["params"] / base["params"] - 1
        size = f"{off:+.1%}" + ("" if abs(off) <= 0.25 else " (NOT within 25%)")
        line = [r["model"], r["spec"], f"{r['params']:,}", size, fmt(r["train step"])]
        sample = fmt(r["sample/sample"]) if r["sample/sample"] else "skipped (--quick)"
        line += [fmt(r["epoch"]), fmt(r["log_prob/sample"]), sample]
        body.append(line)
    return table(header, body)


def targets(lu: list[dict], act: dict, mods: list[dict]) -> list[tuple[str, str, bool]]:
    checks = []
    for r in lu:
        if r["target"] is not None:
            value = r["ours"] / r["limit"]
            name = f"D={r['D']} {r['mode']} <= {r['target']:.3g} x {r['reference']}"
            checks.append((name, num(value), value <= r["target"]))
        peers = [r[k] for k in ("nflows", "nflows cache") if r.get(k)]
        if peers:
            value = min(peers) / r["ours"]
            name = f"D={r['D']} {r['mode']} faster than nflows (best of cache off/on)"
            checks.append((name, f"{num(value)}x", value > 1))
        if r["D"] == 256 and r["mode"] == "eval inverse":
            value = r["zuko"] / r["ours"]
            checks.append(
                ("D=256 eval inverse >= 100x faster than zuko", f"{num(value)}x", value >= 100)
            )
    value = act["inverse"] / act["forward"]
    checks.append(("leaky-softplus inverse <= 10x forward", num(value), value <= 10))
    lunet, rnvp = (next(r for r in mods if r["model"] == k) for k in ("LUNet", "RealNVP"))
    for key, label in (("sample/sample", "sampling per image"), ("epoch", "training epoch")):
        value = lunet[key] / rnvp[key]
        checks.append((f"LUNet {label} no slower than RealNVP", f"{num(value)}x", value <= 1))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="D in {16, 256}, few repeats")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=None, help="also write the markdown to this file")
    parser.add_argument("--json", default=None, help="write the raw times to this file")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    if args.quick:
        cfg, dims = Config(device, 10, 0.05, 1.0), (16, 256)
    else:
        cfg, dims = Config(device, 60, 0.5, 10.0), (16, 256, 784)

    info = machine(device)
    start = time.perf_counter()
    lu = []
    for D in dims:
        log(f"LU block, D = {D}", start)
        lu += lu_block(D, cfg)
    log("activation", start)
    act = activation(cfg)
    log(f"models, D = {MODEL_D}", start)
    mods = models(cfg, autoregressive=not args.quick)
    checks = targets(lu, act, mods)
    elapsed = time.perf_counter() - start

    date = datetime.date.today().isoformat()
    mode = "quick" if args.quick else "full"
    md = [
        f"## zuko-lu benchmarks ({mode} run, {date}, {elapsed:.0f} s)",
        f"Machine: {info}; device {device}, float32.",
        f"### One LU block (batch {BATCH})",
        "Times are medians per call; eval rows run under `torch.no_grad()` with the module in "
        "`.eval()` and the transform rebuilt by `lu()` each call (the cache path); "
        "`peer/ours` > 1 means ours is faster.",
        lu_table(lu),
        f"### Leaky-softplus activation (alpha 0.1, ({BATCH}, {MODEL_D}), no grad)",
        activation_table(act),
        f"### Whole models (D = {MODEL_D})",
        f"Training step: Adam, batch {TRAIN_BATCH}; epoch = {EPOCH_STEPS} steps (3,600 images); "
        f"log_prob: batch {BATCH}, eval, no grad; sampling: batch {BATCH}, except MAF and NSF "
        f"(autoregressive, {MODEL_D} sequential passes per transform): batch {AR_BATCH}, "
        "a single timed call. Parameter counts include MADE's masked (zero) weights.",
        model_table(mods),
        "### Targets",
        table(
            ["target", "value", "met"], [[n, v, "met" if ok else "NOT met"] for n, v, ok in checks]
        ),
    ]
    text = "\n\n".join(md) + "\n"
    print(text)

    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        raw = {"machine": info, "mode": mode, "lu_block": lu, "activation": act}
        raw.update({"models": mods, "targets": checks, "elapsed_s": elapsed})
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=2)


if __name__ == "__main__":
    main()
