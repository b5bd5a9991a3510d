r"""Tests of the ``zuko-lu`` command line on tiny data: every subcommand, resuming,
every bad input, Ctrl-C and a two-process ``torchrun``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import pytest
import torch

from zuko_lu.experiments.cli import main

FAST = ["--no-progress", "--batch-size", "32"]


def on_csv(table: Path) -> list[str]:
    return ["--data", "csv", "--path", str(table)]


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    r"""Runs ``zuko-lu`` in this process; returns its exit code, stdout and stderr."""

    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r"""A CSV of 300 points from two Gaussian clusters, with a header."""

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal((-2, 0), 0.5, (150, 2)), rng.normal((2, 1), 0.3, (150, 2))])
    path = tmp_path_factory.mktemp("data") / "table.csv"
    np.savetxt(path, rng.permutation(x), delimiter=",", header="a,b", comments="")
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, table: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *on_csv(table), "--epochs", "2", "--out", str(out), *FAST]) == 0
    return out


def test_train_evaluate_sample_table(capsys: pytest.CaptureFixture, trained: Path) -> None:
    files = {"checkpoint.pt", "last.pt", "metrics.json", "loss.png", "density.png"}
    assert files <= set(os.listdir(trained))
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["test"]["unit"] == "nats"
    assert metrics["model"]["name"] == "lunet" and metrics["versions"]["torch"]

    code, out, _ = run(capsys, "evaluate", trained)
    assert code == 0 and f"test NLL {metrics['test']['mean']:.3f} nats" in out

    code, out, _ = run(capsys, "sample", trained / "checkpoint.pt", "-n", 10, "-t", 0.5)
    assert code == 0 and "T = 0.5" in out
    assert np.load(trained / "samples-T0.5.npy").shape == (10, 2)
    assert (trained / "samples-T0.5.png").is_file()


def test_train_images(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "digits"
    code, stdout, _ = run(
        capsys,
        "train",
        "--data",
        "digits",
        "--epochs",
        1,
        "--batch-size",
        256,
        "--draws",
        2,
        "--transforms",
        2,
        "--out",
        out,
        "--no-progress",
    )
    assert code == 0
    last = stdout.strip().splitlines()[-1]
    assert (
        last.startswith("test bits/dim") and "2 dequantisation draws" in last and str(out) in last
    )
    assert {"checkpoint.pt", "metrics.json", "samples.png", "loss.png"} <= set(os.listdir(out))

    metrics = json.loads((out / "metrics.json").read_text())
    code, stdout, _ = run(capsys, "evaluate", out, "--draws", 2)
    assert code == 0 and f"bits/dim {metrics['test']['mean']:.3f}" in stdout

    code, _, _ = run(capsys, "sample", out, "-n", 16, "-t", 0.7, "--out", tmp_path / "s")
    x = np.load(tmp_path / "s.npy")
    assert code == 0 and x.shape == (16, 8, 8) and (tmp_path / "s.png").is_file()
    assert np.all((x >= 0) & (x <= 16) & (x == np.floor(x)))


def test_resume(capsys: pytest.CaptureFixture, tmp_path: Path, table: Path) -> None:
    r"""One epoch, then --resume to two, ends where two epochs in a row end."""

    args = [*on_csv(table), *FAST, "--no-pictures"]
    assert run(capsys, "train", *args, "--epochs", 2, "--out", tmp_path / "a")[0] == 0
    assert run(capsys, "train", *args, "--epochs", 1, "--out", tmp_path / "b")[0] == 0
    code, out, _ = run(capsys, "train", "--resume", tmp_path / "b", "--epochs", 2, *FAST)
    assert code == 0 and "test NLL" in out

    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in "ab")
    assert a["state"]["epoch"] == b["state"]["epoch"] == 2
    for k, v in a["state_dict"].items():
        assert torch.allclose(v, b["state_dict"][k], atol=1e-6), k

    code, _, err = run(capsys, "train", "--resume", tmp_path / "b", "--epochs", 2, *FAST)
    assert code == 2 and "trained 2 epochs already" in err

    # into another folder: the best checkpoint comes along
    c = tmp_path / "c"
    code, _, _ = run(capsys, "train", "--resume", tmp_path / "b", "--epochs", 3, "--out", c, *FAST)
    assert code == 0 and {"checkpoint.pt", "last.pt", "metrics.json"} <= set(os.listdir(c))
    assert json.loads((c / "metrics.json").read_text())["epochs"] == 3


def test_compare(capsys: pytest.CaptureFixture, tmp_path: Path, table: Path) -> None:
    models = ["--models", "lunet", "maf", "--epochs", 1]
    code, out, _ = run(capsys, "compare", *on_csv(table), *models, "--out", tmp_path, *FAST)
    assert code == 0 and "compare.md" in out
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["lunet", "maf"]
    for r in rows:
        assert r["parameters"] > 0 and r["sample_ms"] > 0 and r["density_ms"] > 0
        assert np.isfinite(r["test"]) and r["epoch_s"] > 0
    table_md = (tmp_path / "compare.md").read_text()
    assert "| lunet |" in table_md and "| maf |" in table_md and "Machine:" in table_md
    assert (tmp_path / "density.png").is_file() and (tmp_path / "maf" / "checkpoint.pt").is_file()


def bad_inputs(tmp: Path, table: Path, trained: Path) -> dict[str, list]:
    nan = tmp / "nan.csv"
    nan.write_text("a,b\n1,2\n3,nan\n5,6\n7,8\n")
    garbage = tmp / "garbage.pt"
    garbage.write_bytes(os.urandom(1000))
    truncated = tmp / "truncated.pt"
    truncated.write_bytes((trained / "checkpoint.pt").read_bytes()[:3000])
    foreign = tmp / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    csv = on_csv(table)
    return {
        "unknown dataset": ["train", "--data", "nope"],
        "unknown model": ["train", *csv, "--model", "nope"],
        "missing csv": ["train", "--data", "csv", "--path", tmp / "missing.csv"],
        "missing idx": ["train", "--data", "mnist", "--data-dir", tmp],
        "non-finite csv": ["train", "--data", "csv", "--path", nan],
        "class out of range": ["train", "--data", "digits", "--class", 10],
        "zero epochs": ["train", *csv, "--epochs", 0],
        "negative epochs": ["train", *csv, "--epochs", -2],
        "zero lr": ["train", *csv, "--lr", 0],
        "negative lr": ["train", *csv, "--lr", "-1e-3"],
        "nan lr": ["train", *csv, "--lr", "nan"],
        "missing checkpoint": ["evaluate", tmp / "missing.pt"],
        "random checkpoint": ["evaluate", garbage],
        "corrupted checkpoint": ["sample", truncated],
        "foreign checkpoint": ["evaluate", foreign],
        "zero temperature": ["sample", trained, "-t", 0],
        "resume with data": ["train", "--resume", trained, "--data", "blobs"],
        "lunet with hidden": ["train", *csv, "--hidden", 8],
    }


BAD = [
    "unknown dataset",
    "unknown model",
    "missing csv",
    "missing idx",
    "non-finite csv",
    "class out of range",
    "zero epochs",
    "negative epochs",
    "zero lr",
    "negative lr",
    "nan lr",
    "missing checkpoint",
    "random checkpoint",
    "corrupted checkpoint",
    "foreign checkpoint",
    "zero temperature",
    "resume with data",
    "lunet with hidden",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input(
    capsys: pytest.CaptureFixture, tmp_path: Path, table: Path, trained: Path, case: str
) -> None:
    args = bad_inputs(tmp_path, table, trained)[case]
    code, out, err = run(capsys, *args)
    assert code == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zuko-lu") and "error:" in lines[0], err
    assert "Traceback" not in err


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_interrupt(tmp_path: Path, table: Path, capsys: pytest.CaptureFixture) -> None:
    r"""Ctrl-C after the first checkpoint: exit 130, the checkpoint loadable."""

    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "zuko_lu",
        "train",
        *on_csv(table),
        "--epochs",
        "100000",
        "--patience",
        "0",
        "--out",
        str(out),
        *FAST,
    ]
    # a shell's background job ignores SIGINT, and its children inherit that: undo it
    default = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=default,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 130, stderr
    assert (stdout + stderr).count("interrupted") == 1 and "Traceback" not in stderr
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    code, stdout, _ = run(capsys, "evaluate", out)
    assert code == 0 and "test NLL" in stdout


def test_two_processes(tmp_path: Path, table: Path, capsys: pytest.CaptureFixture) -> None:
    r"""``torchrun --nproc-per-node 2`` with a global batch of 32 (16 per process) matches
    a single-process run with batch 32: parameters to 1e-5, test NLL to 1e-5 nats."""

    args = ["train", *on_csv(table), "--epochs", "2", "--no-pictures", *FAST]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "zuko_lu",
        *args,
        "--out",
        str(tmp_path / "ddp"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test NLL") == 1  # rank 0 alone reports
    assert run(capsys, *args, "--out", tmp_path / "one")[0] == 0

    ddp, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp", "one"))
    assert ddp["processes"] == 2 and one["processes"] == 1
    assert abs(ddp["test"]["mean"] - one["test"]["mean"]) < 1e-5
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("ddp", "one"))
    for k, v in a["state_dict"].items():
        assert torch.allclose(v, b["state_dict"][k], atol=1e-5), k


def strict_json(path: Path) -> dict:
    r"""Reads a JSON file, refusing the non-standard NaN and Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def one_line_error(code: int, err: str, expected: int = 2) -> str:
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zuko-lu") and "error:" in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def test_time_limit_zero(capsys: pytest.CaptureFixture, tmp_path: Path, table: Path) -> None:
    r"""Defect 1: ``--time-limit 0`` (no limit) finishes, and so does its resume."""

    args = [*on_csv(table), *FAST, "--no-pictures", "--time-limit", 0]
    code, out, err = run(capsys, "train", *args, "--epochs", 1, "--out", tmp_path)
    assert code == 0 and "test NLL" in out, err
    assert strict_json(tmp_path / "metrics.json")["config"]["time_limit"] is None
    code, out, err = run(capsys, "train", "--resume", tmp_path, "--epochs", 2, *FAST)
    assert code == 0 and "test NLL" in out, err
    assert strict_json(tmp_path / "metrics.json")["epochs"] == 2


def test_resume_options_take_effect(
    capsys: pytest.CaptureFixture, tmp_path: Path, table: Path
) -> None:
    r"""Defect 2: ``--resume --lr X`` trains at X and records X."""

    args = [*FAST, "--no-pictures", "--decay", 0]
    assert run(capsys, "train", *on_csv(table), *args, "--epochs", 1, "--out", tmp_path)[0] == 0
    code, _, err = run(capsys, "train", "--resume", tmp_path, "--epochs", 2, "--lr", 0.25, *args)
    assert code == 0, err
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["optimizer"]["param_groups"][0]["lr"] == 0.25 and last["state"]["lr"] == 0.25
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["config"]["lr"] == 0.25 and metrics["lr"] == 0.25


def test_divergence(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    table: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r"""Defect 3: a non-finite loss stops the run at its first step, with advice, a
    non-zero exit and a strict-JSON metrics.json."""

    from zuko_lu.experiments.training import NLL

    forward = NLL.forward
    monkeypatch.setattr(NLL, "forward", lambda self, y, c=None: forward(self, y, c) * math.nan)
    args = [*on_csv(table), *FAST, "--epochs", 3, "--out", tmp_path]
    code, out, err = run(capsys, "train", *args)
    assert code == 1 and "--lr" in err and "Traceback" not in err, (out, err)
    assert "diverged" in err
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["stopped"] == "diverged" and metrics["epochs"] == 1
    assert metrics["test"]["mean"] is None and metrics["val"] is None


def test_never_improves(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    table: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r"""Defect 3: a non-finite validation loss stops the run after its first epoch."""

    monkeypatch.setattr(
        "zuko_lu.experiments.training.evaluate_nll", lambda *args, **kwargs: (math.inf, 0.0)
    )
    args = [*on_csv(table), *FAST, "--epochs", 3, "--out", tmp_path]
    code, out, err = run(capsys, "train", *args)
    assert code == 1 and "validation" in err and "Traceback" not in err, (out, err)
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["epochs"] == 1 and metrics["val"] is None


def test_evaluate_other_table(
    capsys: pytest.CaptureFixture, tmp_path: Path, trained: Path
) -> None:
    r"""Defect 5: ``evaluate --path`` with a table of another column count."""

    wide = tmp_path / "wide.csv"
    np.savetxt(wide, np.random.default_rng(0).normal(size=(50, 3)), delimiter=",")
    line = one_line_error(*run(capsys, "evaluate", trained, "--path", wide)[::2])
    assert "3 columns" in line and "2" in line


def test_edited_data_name(capsys: pytest.CaptureFixture, tmp_path: Path, trained: Path) -> None:
    r"""Defect 5: a checkpoint whose data name was edited."""

    payload = torch.load(trained / "checkpoint.pt", weights_only=True)
    for name in ("digits", "nope"):
        payload["data"]["name"] = name
        torch.save(payload, tmp_path / "edited.pt")
        one_line_error(*run(capsys, "evaluate", tmp_path / "edited.pt")[::2])
    one_line_error(*run(capsys, "sample", tmp_path / "edited.pt", "--out", tmp_path / "s")[::2])


def test_huge_sample(capsys: pytest.CaptureFixture, trained: Path) -> None:
    r"""Defect 5: a huge ``sample -n`` is refused with a message naming ``-n``."""

    line = one_line_error(*run(capsys, "sample", trained, "-n", 10**12)[::2])
    assert "-n" in line


def test_disk_full(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    table: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r"""Defect 5: a full disk during a save: a clear message, a non-zero exit, and every
    file saved before intact."""

    import errno

    args = [*FAST, "--no-pictures"]
    assert run(capsys, "train", *on_csv(table), *args, "--epochs", 1, "--out", tmp_path)[0] == 0
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    code, _, err = run(capsys, "train", "--resume", tmp_path, "--epochs", 2, *args)
    assert code != 0 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "No space left" in line and ".pt" in line and "saved" in line, err
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == before


def test_out_refused(capsys: pytest.CaptureFixture, tmp_path: Path, table: Path) -> None:
    r"""Defect 8: a folder with a run's files is refused, checkpoint.pt or not."""

    for name in ("last.pt", "metrics.json"):
        (tmp_path / name).write_text("kept")
    args = [*on_csv(table), *FAST, "--epochs", 1, "--out", tmp_path]
    line = one_line_error(*run(capsys, "train", *args)[::2])
    assert "--resume" in line
    assert (tmp_path / "metrics.json").read_text() == "kept"


def test_stale_temporary_files(capsys: pytest.CaptureFixture, tmp_path: Path, table: Path) -> None:
    r"""Defect 8: the temporary file of a killed save is cleaned at the next start."""

    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".last.pt.99999999.tmp").write_bytes(b"partial")
    args = [*on_csv(table), *FAST, "--no-pictures", "--epochs", 1, "--out", tmp_path]
    assert run(capsys, "train", *args)[0] == 0
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize(
    ("option", "args"),
    [
        ("--seed", ["--seed", "-5"]),
        ("--bound", ["--model", "lunet", "--bound", "3"]),
        ("--bound", ["--model", "maf", "--bound", "3"]),
    ],
)
def test_option_named(
    capsys: pytest.CaptureFixture, table: Path, tmp_path: Path, option: str, args: list
) -> None:
    r"""Defect 8: a bad ``--seed`` and a ``--bound`` for a model without one name the
    option."""

    args = [*on_csv(table), *FAST, "--epochs", 1, *args, "--out", tmp_path]
    line = one_line_error(*run(capsys, "train", *args)[::2])
    assert option in line


def test_metrics_rows_and_epoch_seconds(
    capsys: pytest.CaptureFixture, tmp_path: Path, table: Path
) -> None:
    r"""Defect 7 (rows of each split) and the time of each epoch; a time limit that cuts
    the run short says so."""

    args = [*on_csv(table), *FAST, "--no-pictures", "--epochs", 50, "--out", tmp_path]
    code, out, err = run(capsys, "train", *args, "--time-limit", "1e-9")
    assert code == 0, err
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["rows"] == {"train": 243, "val": 27, "test": 30}
    seconds = metrics["history"]["epoch_seconds"]
    assert len(seconds) == metrics["epochs"] == 1 and seconds[0] > 0
    assert "stopped by --time-limit 1e-09 s after 1 epoch" in out
    assert "epoch 1" in out and " s" in out


def test_compare_divergence(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    table: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r"""Defect 3 in ``compare``: a model that diverges is a row that says so, the
    others are compared, and the exit code is 1."""

    from zuko_lu.experiments.training import NLL

    forward = NLL.forward
    nan = lambda self, y, c=None: (
        forward(self, y, c) * (math.nan if self.flow.__class__.__name__ == "MAF" else 1)
    )
    monkeypatch.setattr(NLL, "forward", nan)
    models = ["--models", "lunet", "maf", "--epochs", 1, "--time-limit", 0]
    code, out, err = run(capsys, "compare", *on_csv(table), *models, "--out", tmp_path, *FAST)
    assert code == 1 and "maf diverged" in err and "Traceback" not in err, (out, err)
    rows = strict_json(tmp_path / "compare.json")["rows"]
    assert [r["test"] is None for r in rows] == [False, True]
    assert "| maf | diverged |" in (tmp_path / "compare.md").read_text()


def test_pictures_fail_metrics_kept(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    table: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r"""A failure while drawing the pictures (here a full disk) keeps the run's
    ``metrics.json`` with its test score."""

    import errno

    from zuko_lu.experiments import plots

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(plots, "run_pictures", full)
    args = [*on_csv(table), *FAST, "--epochs", 1, "--out", tmp_path]
    code, _, err = run(capsys, "train", *args)
    assert code == 2 and "No space left" in err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["mean"]) and "pictures" not in metrics
