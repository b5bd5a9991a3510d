r"""The subcommands of ``zuko-lu``: each takes the parsed arguments (see
:mod:`zuko_lu.experiments.cli`) and returns an exit code; bad input raises an error that
:func:`zuko_lu.experiments.cli.main` turns into one line and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "compare",
    "evaluate",
    "sample",
    "train",
]

import argparse
import math
import time

from pathlib import Path
from typing import Any

TRAIN_DEFAULTS = {
    "epochs": 50,
    "batch_size": 64,
    "lr": 1e-3,
    "clip": 10.0,
    "patience": 10,
    "decay": 3,
    "time_limit": 100.0,
    "seed": 0,
}
DATA_DEFAULTS = {
    "data": "mnist",
    "data_dir": None,
    "path": None,
    "class_": None,
    "val_fraction": 0.1,
}
MODEL_DEFAULTS = {"model": "lunet", "transforms": None, "hidden": None, "bound": None}


def _config(args: argparse.Namespace, base: dict | None = None) -> Any:  # noqa: ANN401
    from .training import TrainConfig

    values = {**TRAIN_DEFAULTS, **(base or {})}
    values.update({k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k) is not None})
    for key in ("clip", "patience", "decay", "time_limit"):
        values[key] = values[key] or None  # 0 switches it off
    return TrainConfig(**values)


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    from .runs import data_spec

    d = {
        k: getattr(args, k) if getattr(args, k) is not None else v
        for k, v in DATA_DEFAULTS.items()
    }
    seed = args.seed if args.seed is not None else TRAIN_DEFAULTS["seed"]
    return data_spec(d["data"], d["data_dir"], d["path"], d["class_"], seed, d["val_fraction"])


def _default_out(kind: str, spec: dict, model: str = "") -> Path:
    name = spec["name"] + ("" if spec["class_"] is None else f"{spec['class_']}")
    parts = [kind, name, model, time.strftime("%Y%m%d-%H%M%S")]
    return Path("runs") / "-".join(p for p in parts if p)


def train(args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from .runs import headline, train_run

    resume = None
    if args.resume is not None:
        given = [
            f"--{k.rstrip('_').replace('_', '-')}"
            for k in (*DATA_DEFAULTS, *MODEL_DEFAULTS)
            if getattr(args, k) is not None
        ]
        if given:
            raise ValueError(
                f"--resume continues the checkpoint's data and model: drop {', '.join(given)}"
            )
        resume = ckpt.load(args.resume, name="last.pt")
        config = _config(args, resume.get("config"))
        out = Path(args.out) if args.out else Path(resume["path"]).parent
        spec, model, kwargs = resume["data"], resume["model"]["name"], {}
    else:
        config, spec = _config(args), _spec(args)
        model = args.model or MODEL_DEFAULTS["model"]
        kwargs = {
            "transforms": args.transforms,
            "hidden_features": args.hidden,
            "bound": args.bound,
        }
        out = Path(args.out) if args.out else _default_out("", spec, model)

    metrics = train_run(
        spec,
        model,
        kwargs,
        config,
        out,
        args.device,
        resume,
        args.draws,
        not args.no_progress,
        not args.no_pictures,
    )
    if metrics is not None:
        print(headline(metrics))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from .distributed import resolve_device
    from .runs import describe, load_data
    from .runs import evaluate as nll

    payload = ckpt.load(args.checkpoint)
    flow, pre = ckpt.restore(payload)
    spec = dict(payload["data"])
    spec.update(
        {
            k: str(Path(getattr(args, k)).resolve())
            for k in ("data_dir", "path")
            if getattr(args, k)
        }
    )
    data = load_data(spec)
    device = resolve_device(args.device)
    x = {"test": data.test, "val": data.val, "train": data.train}[args.split]
    mean, std = nll(flow.to(device), pre.to(device), x.to(device), args.draws, args.seed)
    metric, unit = describe(data)
    if metric == "bits/dim":
        print(
            f"{args.split} bits/dim {mean:.3f} ± {std:.4f} ({args.draws} dequantisation draws,"
            f" {len(x):,} images) of {payload['path']}"
        )
    else:
        print(f"{args.split} NLL {mean:.3f} nats ({len(x):,} examples) of {payload['path']}")
    return 0


def sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import checkpoint as ckpt
    from . import plots
    from .distributed import resolve_device
    from .runs import draw

    payload = ckpt.load(args.checkpoint)
    flow, pre = ckpt.restore(payload)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    x = draw(flow.to(device), pre.to(device), args.num, args.temperature).cpu()

    prefix = (
        Path(args.out)
        if args.out
        else Path(payload["path"]).with_name(f"samples-T{args.temperature:g}")
    )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    image = payload["preprocess"]["kind"] == "image"
    shape = _image_shape(payload, x.shape[-1]) if image else None
    array = x.reshape(-1, *shape).numpy() if image else x.numpy()
    np.save(prefix.with_name(prefix.name + ".npy"), array)
    written = [prefix.name + ".npy"]
    if plots.available():
        png = prefix.with_name(prefix.name + ".png")
        if image:
            plots.image_grid(torch.from_numpy(array), pre.levels, png, f"T = {args.temperature:g}")
        else:
            plots.scatter([(f"samples, T = {args.temperature:g}", x)], png)
        written.append(png.name)
    bad = int((~torch.isfinite(x)).any(-1).sum())
    note = f" ({bad} non-finite)" if bad else ""
    print(
        f"wrote {args.num} samples{note} at T = {args.temperature:g} to "
        f"{' and '.join(str(prefix.with_name(w)) for w in written)}"
    )
    return 0


def _image_shape(payload: dict, features: int) -> tuple[int, ...]:
    shape = payload.get("shape")
    if shape:
        return tuple(shape)
    side = math.isqrt(features)
    return (side, side) if side * side == features else (features,)


def compare(args: argparse.Namespace) -> int:
    from .compare import compare

    spec, config = _spec(args), _config(args)
    out = Path(args.out) if args.out else _default_out("compare", spec)
    lunet = {} if args.transforms is None else {"transforms": args.transforms}
    compare(
        spec,
        args.models,
        config,
        out,
        lunet,
        not args.no_match,
        args.device,
        args.draws,
        not args.no_progress,
    )
    print(f"comparison in {out / 'compare.md'} and {out / 'compare.json'}")
    return 0
