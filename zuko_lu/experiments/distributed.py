r"""Devices and processes: device names, and the process group of a ``torchrun``
launch (see :mod:`zuko_lu.experiments.training` for how the processes share the work)."""

from __future__ import annotations

__all__ = [
    "resolve_device",
    "setup_distributed",
]

import os

import torch
import torch.distributed as dist


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    r"""Initialises :mod:`torch.distributed` when launched by ``torchrun`` (the
    :py:`RANK`, :py:`WORLD_SIZE` and :py:`LOCAL_RANK` variables): gloo on the CPU,
    nccl on CUDA, one GPU per local rank.

    Arguments:
        device: The requested device, :py:`"auto"`, :py:`"cpu"` or :py:`"cuda"`.

    Returns:
        The rank, the world size and this process's device.
    """

    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return 0, 1, dev

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), dev


def resolve_device(name: str) -> torch.device:
    r"""Returns the device of a name (:py:`"auto"`: CUDA when available, else the CPU).

    Raises:
        ValueError: For an unknown device, or CUDA where it is not available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device '{name}' (expected cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was asked for, but CUDA is not available")
    return device
