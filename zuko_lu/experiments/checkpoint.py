r"""Checkpoints: plain dictionaries of tensors, numbers and strings, written atomically.

A checkpoint holds a format marker, the model's name and constructor arguments, its
state dict, the preprocessing's state, the dataset's options, the training configuration
and the library versions. It is read back with :py:`torch.load(weights_only=True)`, so
that loading one runs no pickled code.
"""

from __future__ import annotations

__all__ = [
    "FORMAT",
    "CheckpointError",
    "load",
    "preprocess_from",
    "restore",
    "save",
    "versions",
]

import os
import platform
import re
import warnings

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .preprocess import ImagePreprocess, TabularPreprocess

FORMAT = "zuko-lu/1"
_KEYS = ("model", "state_dict", "preprocess", "data")


class CheckpointError(ValueError):
    r"""Raised when a checkpoint is missing, unreadable, corrupted or foreign."""


def versions() -> dict[str, str]:
    r"""Returns the versions of Python, torch, zuko, numpy and zuko-lu."""

    import numpy
    import zuko

    from .. import __version__

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "zuko": str(zuko.__version__),
        "numpy": str(numpy.__version__),
        "zuko_lu": str(__version__),
    }


def save(payload: dict[str, Any], path: str | os.PathLike) -> None:
    r"""Writes a checkpoint atomically: to a temporary file in the same folder, then
    renamed over `path`, so that an interruption never leaves a partial file.

    Arguments:
        payload: The checkpoint's contents (the format marker is added).
        path: The file.
    """

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, **payload}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: str | os.PathLike, name: str = "checkpoint.pt") -> dict[str, Any]:
    r"""Reads and checks a checkpoint, on the CPU.

    Arguments:
        path: The file, or a run folder that holds `name`.
        name: The file to read in a folder.

    Returns:
        The checkpoint's contents.

    Raises:
        CheckpointError: With a one-line message, if the file is missing, is not a
            torch file, is corrupted, or is a torch file that zuko-lu did not write.
    """

    path = Path(path)
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: '{path}'")

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch's zip, or legacy pickle
        raise CheckpointError(f"'{path}' is not a torch file, so not a zuko-lu checkpoint")

    try:
        with warnings.catch_warnings():  # e.g. about old pickle protocols
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"'{path}' is corrupted or not a checkpoint ({_reason(e)})") from e

    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"'{path}' is a torch file but not a zuko-lu checkpoint")
    if payload["format"] != FORMAT:
        raise CheckpointError(
            f"'{path}' has format {payload['format']!r}; this zuko-lu reads {FORMAT!r}"
        )
    missing = [k for k in _KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"'{path}' is an incomplete checkpoint (no {', '.join(missing)})")

    payload["path"] = str(path)
    return payload


def _reason(e: BaseException) -> str:
    r"""The telling line of an exception's message, without terminal escapes."""

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    text = text.split("Unpickler error:", 1)[-1]  # weights_only's reason follows this
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines or [type(e).__name__])[0].split(". ")[0].rstrip(".")


def preprocess_from(spec: dict[str, Any]) -> ImagePreprocess | TabularPreprocess:
    r"""Rebuilds a preprocessing module from :py:`{"kind": ..., "state": ...}`."""

    pre = ImagePreprocess(1) if spec["kind"] == "image" else TabularPreprocess()
    pre.load_state_dict(spec["state"])
    return pre


def restore(payload: dict[str, Any]) -> tuple[nn.Module, ImagePreprocess | TabularPreprocess]:
    r"""Rebuilds the model and the preprocessing of a checkpoint, in eval mode.

    Arguments:
        payload: A checkpoint, as returned by :func:`load`.

    Returns:
        The flow and the preprocessing, on the CPU.
    """

    from .models import build

    where = payload.get("path", "the checkpoint")
    try:
        spec = payload["model"]
        with torch.random.fork_rng():
            flow = build(spec["name"], int(spec["features"]), **spec.get("kwargs", {}))
        flow.load_state_dict(payload["state_dict"])
        pre = preprocess_from(payload["preprocess"])
    except (KeyError, TypeError, RuntimeError, ValueError, AssertionError) as e:
        raise CheckpointError(f"{where} does not match its model ({_reason(e)})") from e

    return flow.eval(), pre.eval()
