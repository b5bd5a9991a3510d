r"""The command line: ``zuko-lu train | evaluate | sample | compare``.

Run ``zuko-lu COMMAND --help`` for the options. Every bad input (unknown dataset or
model, missing or foreign files, out-of-range values) ends with one line
``zuko-lu: error: ...`` on stderr and exit code 2; a run that diverges with such a line
(what to try) and exit code 1; Ctrl-C with exit code 130, the checkpoints written so far
intact. Defaults come from :mod:`zuko_lu.experiments.config`. Under
``torchrun --nproc-per-node N -m zuko_lu train`` training is data-parallel (see
:mod:`zuko_lu.experiments.training`) and only rank 0 writes.
"""

from __future__ import annotations

__all__ = [
    "main",
    "parser",
]

import argparse
import math
import sys

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from . import commands
from . import config as defaults
from .config import TrainConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(
    kind: type, low: float, *, strict: bool = True, high: float = math.inf, what: str = ""
) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 0, what="a positive integer")
_count = _number(int, 0, strict=False, what="an integer >= 0")
_positive = _number(float, 0.0, what="a positive number")
_nonnegative = _number(float, 0.0, strict=False, what="a number >= 0")
_samples = _number(
    int,
    0,
    high=defaults.MAX_SAMPLES,
    what=f"a positive integer up to {defaults.MAX_SAMPLES:,} (run sample again with "
    "another --seed for more)",
)


def _bound(text: str) -> float | str:
    return "auto" if text == "auto" else _positive(text)


def _option(text: str) -> tuple[str, Any]:
    from .models import parse_value

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, parse_value(value)


def _fraction(text: str) -> float:
    value = _nonnegative(text)
    if not 0 < value < 1:  # a validation set is needed for early stopping
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def _add_data(p: argparse.ArgumentParser) -> None:
    from .data import names

    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        choices=names(),
        help=f"the dataset (default: {defaults.DATA})",
    )
    g.add_argument("--data-dir", metavar="DIR", help="a folder with MNIST/Fashion-MNIST IDX files")
    g.add_argument("--path", metavar="FILE", help="the table of --data csv or npy")
    g.add_argument("--class", dest="class_", type=int, metavar="K", help="keep one class only")
    g.add_argument(
        "--val-fraction",
        type=_fraction,
        metavar="F",
        help=f"validation share of the training pool (default: {defaults.VAL_FRACTION:g})",
    )


def _per_model(key: str) -> str:
    given = [(m, c[key]) for m, c in defaults.MODEL_CONFIG.items() if key in c]
    return "".join(f"; {m} in train: {v:g}" for m, v in given)


def _add_training(p: argparse.ArgumentParser) -> None:
    d = asdict(TrainConfig())
    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=_positive_int,
        help=f"at most this many (default: {d['epochs']}{_per_model('epochs')})",
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="B",
        help=f"global batch size; the last partial batch is dropped (default: {d['batch_size']})",
    )
    g.add_argument("--lr", type=_positive, help=f"Adam's learning rate (default: {d['lr']:g})")
    g.add_argument(
        "--clip",
        type=_nonnegative,
        metavar="NORM",
        help=f"clip the gradient norm of the loss in nats/dim, 0 for none "
        f"(default: {d['clip']:g})",
    )
    g.add_argument(
        "--patience",
        type=_count,
        metavar="N",
        help=f"early stopping after N epochs without a better validation loss, "
        f"0 for none (default: {d['patience']})",
    )
    g.add_argument(
        "--decay",
        type=_count,
        metavar="N",
        help=f"halve the learning rate after every N epochs without a better validation "
        f"loss, 0 for a constant rate (default: {d['decay']})",
    )
    g.add_argument(
        "--time-limit",
        type=_nonnegative,
        metavar="SECONDS",
        help=f"stop training after this long (per model in compare), 0 for no limit "
        f"(default: {d['time_limit']:g}{_per_model('time_limit')})",
    )
    g.add_argument(
        "--seed",
        type=_count,
        help=f"seed of the split, the model and the batches (default: {d['seed']})",
    )
    p.add_argument(
        "--draws",
        type=_positive_int,
        default=defaults.DRAWS,
        help=f"dequantisation draws of the test evaluation (default: {defaults.DRAWS})",
    )


def _add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help=f"{defaults.MODEL} (default), or any flow of the zuko.flows registry: realnvp, "
        "maf, nsf, the LU hybrids lumaf, lunsf, lurealnvp, ...",
    )
    g.add_argument(
        "--transforms",
        type=_positive_int,
        metavar="N",
        help="number of transforms (lunet: N LU blocks with activations, + 1; default 3)",
    )
    g.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        metavar="W",
        help="hidden widths of the baselines' networks",
    )
    g.add_argument(
        "--bound",
        type=_bound,
        help="spline bound of nsf and lunsf, or 'auto' (default): the data's range",
    )
    g.add_argument(
        "--option",
        type=_option,
        action="append",
        metavar="KEY=VALUE",
        help="any other option of the model's builder, repeatable; VALUE is a Python "
        "literal or a word (e.g. --option mixing=permute --option steps=4 for glow)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_parser(sub: Any) -> None:
    r"""The options of ``zuko-lu train``."""

    p = sub.add_parser(
        "train",
        help="train a flow",
        description="Train a flow by maximum "
        "likelihood; with no option, LU-Net 3 + 1 on the shipped MNIST digits.",
    )
    _add_data(p)
    _add_model(p)
    _add_training(p)
    _add_common(p)
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/DATA-MODEL-TIME)")
    p.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue a run from its last.pt (or folder), with its data, model and "
        "learning rate; --epochs is the new total, other training options given override",
    )
    p.add_argument("--no-pictures", action="store_true", help="skip the pictures")
    p.add_argument(
        "--conditional",
        action="store_true",
        help="a class-conditional model p(x | label), the one-hot label as its context "
        "(labelled data; models with a context option, e.g. glow, lunsf, maf)",
    )
    p.set_defaults(run=commands.train)


def _evaluate_parser(sub: Any) -> None:
    r"""The options of ``zuko-lu evaluate``."""

    p = sub.add_parser("evaluate", help="test NLL or bits/dim of a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint.pt, or a run folder")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument(
        "--draws",
        type=_positive_int,
        default=defaults.DRAWS,
        help=f"dequantisation draws (default: {defaults.DRAWS})",
    )
    p.add_argument("--seed", type=_count, default=0, help="seed of the dequantisation noise")
    p.add_argument("--data-dir", metavar="DIR", help="where the IDX files are now")
    p.add_argument("--path", metavar="FILE", help="where the csv/npy table is now")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.set_defaults(run=commands.evaluate)


def _sample_parser(sub: Any) -> None:
    r"""The options of ``zuko-lu sample``."""

    p = sub.add_parser("sample", help="draw samples from a checkpoint, to .npy and .png")
    p.add_argument("checkpoint", help="a checkpoint.pt, or a run folder")
    p.add_argument(
        "-n",
        "--num",
        type=_samples,
        default=defaults.SAMPLES,
        help=f"how many, at most {defaults.MAX_SAMPLES:,} (default: {defaults.SAMPLES})",
    )
    p.add_argument(
        "-t",
        "--temperature",
        type=_positive,
        default=1.0,
        metavar="T",
        help="latent drawn from N(0, T^2 I), as Glow samples (default: 1)",
    )
    p.add_argument("--seed", type=_count, default=0, help="seed of the latent draws")
    p.add_argument(
        "--class",
        dest="class_",
        type=int,
        metavar="K",
        help="the class to draw from a class-conditional checkpoint (needed there)",
    )
    p.add_argument(
        "--out",
        metavar="PREFIX",
        help="writes PREFIX.npy and PREFIX.png (default: RUN/samples-T<T>)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.set_defaults(run=commands.sample)


def _compare_parser(sub: Any) -> None:
    r"""The options of ``zuko-lu compare``."""

    p = sub.add_parser(
        "compare",
        help="train LU-Net and baselines; a markdown and JSON table",
        description="Train LU-Net and baselines on the same data, split and budget, with "
        "the baselines' hidden widths matched to LU-Net's parameter count; write "
        "compare.md, compare.json, every model's samples side by side, and one run folder "
        "per model. Timings: medians after a warm-up.",
    )
    _add_data(p)
    _add_training(p)
    _add_common(p)
    p.add_argument(
        "--models",
        nargs="+",
        default=list(defaults.COMPARE_MODELS),
        metavar="NAME",
        help=f"models to compare (default: {' '.join(defaults.COMPARE_MODELS)}); also lumaf, "
        "lunsf, lurealnvp, glow, and any flow registered under the zuko.flows entry points; "
        "NAME:KEY=VALUE,... gives a model options (e.g. glow:mixing=permute)",
    )
    p.add_argument(
        "--transforms",
        type=_positive_int,
        metavar="N",
        help="LU-Net's N LU blocks with activations (+ 1); default 3",
    )
    p.add_argument(
        "--no-match",
        action="store_true",
        help="zuko's default sizes instead of LU-Net's parameter count",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/compare-DATA-TIME)")
    p.set_defaults(run=commands.compare)


def parser() -> argparse.ArgumentParser:
    r"""Returns the argument parser of ``zuko-lu``."""

    from .. import __version__

    root = _Parser(
        prog="zuko-lu",
        description="LU-Net normalizing flows: train, evaluate, sample and compare.",
    )
    root.add_argument("--version", action="version", version=f"zuko-lu {__version__}")
    sub = root.add_subparsers(dest="command", metavar="COMMAND")

    for add in (_train_parser, _evaluate_parser, _sample_parser, _compare_parser):
        add(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    r"""Runs ``zuko-lu`` and returns its exit code: 0, 1 for a run that diverged, 2 for bad
    input, 130 for Ctrl-C."""

    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help(sys.stderr)
        return 2

    from .checkpoint import CheckpointError
    from .data import DataError
    from .training import DivergedError

    try:
        return args.run(args)
    except KeyboardInterrupt as e:
        print(f"zuko-lu: interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        return 130
    except DivergedError as e:
        return _error(e, 1)
    except (CheckpointError, DataError, ValueError, LookupError, ImportError, OSError) as e:
        return _error(e, 2)
    finally:
        _shutdown()


def _error(e: BaseException, code: int) -> int:
    message = " ".join(str(e).split()) or type(e).__name__
    print(f"zuko-lu: error: {message}", file=sys.stderr)
    return code


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
