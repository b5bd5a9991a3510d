r"""The subcommands of ``zuko-lu``: each takes the parsed arguments (see
:mod:`zuko_lu.experiments.cli`) and returns an exit code; bad input raises an error that
:func:`zuko_lu.experiments.cli.main` turns into one line and exit code 2. Defaults are
read from :mod:`zuko_lu.experiments.config`.
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
import sys
import time

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from . import config as defaults
from .config import TrainConfig

# the options that a resumed run takes from its checkpoint, and the model options' flags
_DATA_OPTIONS = ("data", "data_dir", "path", "class_", "val_fraction")
_MODEL_OPTIONS = {"transforms": "--transforms", "hidden_features": "--hidden", "bound": "--bound"}


def _flag(dest: str) -> str:
    return "--" + dest.rstrip("_").replace("_", "-")


def _config(args: argparse.Namespace, base: dict | None = None) -> TrainConfig:
    r"""The training configuration: the defaults, then `base` (a resumed run's), then
    the options given; 0 switches off clip, patience, decay and the time limit."""

    values = {**asdict(TrainConfig()), **(base or {})}
    for f in fields(TrainConfig):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    for key in ("clip", "patience", "decay", "time_limit"):
        values[key] = values[key] or None
    return TrainConfig(**values)


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    from .runs import data_spec

    return data_spec(
        args.data or defaults.DATA,
        data_dir=args.data_dir,
        path=args.path,
        class_=args.class_,
        seed=TrainConfig.seed if args.seed is None else args.seed,
        val_fraction=args.val_fraction or defaults.VAL_FRACTION,
    )


def _default_out(kind: str, spec: dict, model: str = "") -> Path:
    name = spec["name"] + ("" if spec["class_"] is None else f"{spec['class_']}")
    parts = [kind, name, model, time.strftime("%Y%m%d-%H%M%S")]
    return Path("runs") / "-".join(p for p in parts if p)


def _model_options(args: argparse.Namespace, model: str) -> dict[str, Any]:
    r"""The model options given, each checked against the model's builder."""

    from .models import accepts, available

    if model not in available():
        raise ValueError(f"unknown model '{model}', known: {', '.join(available())}")
    kwargs = {"transforms": args.transforms, "hidden_features": args.hidden, "bound": args.bound}
    for key, flag in _MODEL_OPTIONS.items():
        value = kwargs[key]
        if value is not None and value != "auto" and not accepts(model, key, value):
            raise ValueError(f"model '{model}' takes no {flag}: drop it")
    for key, value in args.option or []:
        if kwargs.get(key) is not None:
            raise ValueError(f"--option {key}=... repeats {_MODEL_OPTIONS[key]}: give one")
        kwargs[key] = value
    return kwargs


def _resumed(args: argparse.Namespace) -> tuple[dict[str, Any], TrainConfig, Path]:
    from . import checkpoint as ckpt

    kept = (*_DATA_OPTIONS, "model", "transforms", "hidden", "bound", "option")
    if args.conditional:
        raise ValueError("--resume continues the checkpoint's model: drop --conditional")
    given = [_flag(k) for k in kept if getattr(args, k) is not None]
    if given:
        raise ValueError(
            f"--resume continues the checkpoint's data and model: drop {', '.join(given)}"
        )
    resume = ckpt.load(args.resume, name="last.pt")
    config = _config(args, resume.get("config"))
    if args.lr is not None:  # the rate given takes effect, its decay restarts from it
        resume["state"]["lr"] = args.lr
    out = Path(args.out) if args.out else Path(resume["path"]).parent
    return resume, config, out


def train(args: argparse.Namespace) -> int:
    from .runs import headline, train_run

    if args.resume is not None:
        resume, config, out = _resumed(args)
        spec, model, kwargs = resume["data"], resume["model"]["name"], {}
    else:
        model = args.model or defaults.MODEL
        kwargs = _model_options(args, model)
        resume, spec = None, _spec(args)
        config = _config(args, defaults.MODEL_CONFIG.get(model))
        out = Path(args.out) if args.out else _default_out("", spec, model)

    metrics = train_run(
        spec,
        model,
        kwargs,
        config,
        out,
        device=args.device,
        resume=resume,
        draws=args.draws,
        progress=not args.no_progress,
        pictures=not args.no_pictures,
        conditional=args.conditional,
    )
    if metrics is not None:
        print(headline(metrics))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from .distributed import resolve_device
    from .runs import contexts, data_for, describe
    from .runs import evaluate as nll

    payload = ckpt.load(args.checkpoint)
    flow, pre = ckpt.restore(payload)
    data = data_for(payload, data_dir=args.data_dir, path=args.path)
    device = resolve_device(args.device)
    split = ("train", "val", "test").index(args.split)
    x = (data.train, data.val, data.test)[split]
    c = contexts(data, payload["model"].get("classes", 0))
    c = None if c is None else c[split].to(device)
    flow, pre = flow.to(device), pre.to(device)
    mean, std = nll(flow, pre, x.to(device), draws=args.draws, seed=args.seed, context=c)
    metric, _ = describe(data)
    given = "" if c is None else "given the class label, "
    if metric == "bits/dim":
        print(
            f"{args.split} bits/dim {mean:.3f} ± {std:.4f} ({given}{args.draws} dequantisation"
            f" draws, {len(x):,} images) of {payload['path']}"
        )
    else:
        print(
            f"{args.split} NLL {mean:.3f} nats ({given}{len(x):,} examples) of {payload['path']}"
        )
    return 0


def sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import checkpoint as ckpt
    from . import plots
    from .distributed import resolve_device
    from .sampling import draw

    payload = ckpt.load(args.checkpoint)
    flow, pre = ckpt.restore(payload)
    device = resolve_device(args.device)
    flow, pre = flow.to(device), pre.to(device)
    c = _class_context(payload, args.class_, device)
    torch.manual_seed(args.seed)
    chunks = [min(10_000, args.num - i) for i in range(0, args.num, 10_000)]
    x = torch.cat([draw(flow, pre, n, args.temperature, context=c).cpu() for n in chunks])

    prefix = (
        Path(args.out)
        if args.out
        else Path(payload["path"]).with_name(f"samples-T{args.temperature:g}")
    )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    image = payload["preprocess"]["kind"] == "image"
    shape = _image_shape(payload, x.shape[-1]) if image else None
    array = x.reshape(-1, *shape).numpy() if image else x.numpy()
    ckpt.write_atomic(prefix.with_name(prefix.name + ".npy"), lambda f: np.save(f, array))
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


def _class_context(payload: dict, class_: int | None, device: Any) -> Any:
    r"""The one-hot context of the class to sample, checked against the checkpoint."""

    import torch

    classes = payload["model"].get("classes", 0)
    if not classes:
        if class_ is not None:
            raise ValueError(f"{payload['path']} is not class-conditional: drop --class")
        return None
    if class_ is None or not 0 <= class_ < classes:
        given = "none" if class_ is None else class_
        raise ValueError(
            f"{payload['path']} is class-conditional: pass --class K with K in "
            f"0..{classes - 1} (given: {given})"
        )
    return torch.eye(classes, device=device)[class_]


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
    rows = compare(
        spec,
        args.models,
        config,
        out,
        lunet=lunet,
        match=not args.no_match,
        device=args.device,
        draws=args.draws,
        progress=not args.no_progress,
    )
    print(f"comparison in {out / 'compare.md'} and {out / 'compare.json'}")
    diverged = [r["model"] for r in rows if r["test"] is None]
    if diverged:
        print(f"zuko-lu: error: {', '.join(diverged)} diverged (see above)", file=sys.stderr)
        return 1
    return 0
