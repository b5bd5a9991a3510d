r"""Checkpoints and the other files of a run, written atomically.

A checkpoint is a plain dictionary of tensors, numbers and strings. It holds a format
marker, the model's name and constructor arguments, its state dict, the preprocessing's
state, the dataset's options, the training configuration and the library versions. It
is read back with :py:`torch.load(weights_only=True)`, so that loading one runs no pickled code.

Every file (checkpoints, :py:`metrics.json`) is first written to a temporary file
:py:`.NAME.PID.tmp` in the same folder, then renamed over the old one: an interruption or
a full disk leaves the previous file intact, and :func:`remove_stale` deletes the
temporary files of processes that were killed mid-write.
"""

from __future__ import annotations

__all__ = [
    "FORMAT",
    "CheckpointError",
    "load",
    "preprocess_from",
    "remove_stale",
    "restore",
    "save",
    "versions",
    "write_atomic",
    "write_json",
]

import json
import math
import os
import platform
import re
import warnings

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn as nn

from .data import names
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


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    r"""Writes a file atomically: :py:`write(f)` fills a temporary file in the same
    folder, which is then renamed over `path`.

    Raises:
        OSError: If writing fails (e.g. a full disk), with a message naming the file;
            the previous file is intact and the temporary one removed.
    """

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        reason = e.strerror or str(e)
        message = f"{reason} while saving '{path}'; the files saved before are intact"
        raise OSError(e.errno, message) from e
    finally:
        tmp.unlink(missing_ok=True)


def save(payload: dict[str, Any], path: str | os.PathLike) -> None:
    r"""Writes a checkpoint atomically (see :func:`write_atomic`).

    Arguments:
        payload: The checkpoint's contents (the format marker is added).
        path: The file.
    """

    write_atomic(path, lambda f: torch.save({"format": FORMAT, **payload}, f))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: str | os.PathLike, value: Any) -> None:
    r"""Writes standard JSON atomically: non-finite numbers become :py:`null`, other
    objects their :py:`str`."""

    text = json.dumps(_finite(value), indent=2, default=str, allow_nan=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def remove_stale(folder: str | os.PathLike) -> list[str]:
    r"""Deletes the temporary files that killed processes left in a folder (see
    :func:`write_atomic`); returns their names."""

    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:  # another user's
        return True
    return True


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
    data = payload["data"].get("name") if isinstance(payload["data"], dict) else None
    if data not in names():
        raise CheckpointError(f"'{path}' names an unknown dataset {data!r}: was it edited?")

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
