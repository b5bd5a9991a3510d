r"""Tests for the zuko_lu.experiments.preprocess module: float64 standardisation, refused
inputs, and checkpoints that store the preprocessing as plain data."""

import json
import math
import zipfile

import numpy as np
import pytest
import torch

from zuko_lu.experiments import checkpoint as ckpt
from zuko_lu.experiments.metrics import evaluate_nll
from zuko_lu.experiments.preprocess import ImagePreprocess, TabularPreprocess


def test_timestamps_keep_their_spread():
    # float32 rounds 1.7e9 +- 1 to steps of 128: the column would collapse
    g = torch.Generator().manual_seed(0)
    t = 1.7e9 + 2 * torch.rand(200, 1, generator=g, dtype=torch.float64) - 1
    pre = TabularPreprocess().fit(t)
    y, ladj = pre(t)
    assert y.dtype == torch.float32 and ladj.dtype == torch.float32
    assert y.unique().numel() == 200
    assert y.std().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(ladj.double(), -pre.std.log().sum().expand(200), rtol=1e-6)
    assert torch.allclose(pre.inverse(y), t, rtol=0, atol=1e-5)


def test_values_beyond_float32():
    g = torch.Generator().manual_seed(0)
    x = 1e39 * torch.randn(300, 2, generator=g, dtype=torch.float64)
    pre = TabularPreprocess().fit(x)
    y, ladj = pre(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()

    # the NLL in the original units, exactly as a Gaussian with the fitted moments gives
    normal = torch.distributions.Normal(0.0, 1.0)
    mean, _ = evaluate_nll(lambda y: normal.log_prob(y).sum(-1), x, pre, draws=1)
    direct = -torch.distributions.Normal(pre.mean, pre.std).log_prob(x).sum(-1).mean()
    assert math.isfinite(mean) and mean == pytest.approx(direct.item(), rel=1e-6)


def test_constant_column_refused():
    x = torch.randn(50, 3)
    x[:, 2] = 7.0
    with pytest.raises(ValueError, match=r"column 2 is constant .*every value is 7\)"):
        TabularPreprocess().fit(x)
    x[:, 2] = 1.7e9  # constant at any magnitude
    with pytest.raises(ValueError, match="column 2 is constant"):
        TabularPreprocess().fit(x)
    with pytest.raises(ValueError, match=r"N >= 2"):
        TabularPreprocess().fit(x[:1])


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.rand(10, 4), r"non-integer values .*rescaled\? pass the integer levels 0..255"),
        (torch.full((10, 4), 300.0), r"\[300, 300\], outside the levels 0..255"),
        (2 * torch.randint(0, 2, (10, 4)).float() - 1, r"\[-1, 1\], outside the levels.*rescaled"),
    ],
)
def test_images_must_be_levels(x, match):
    with pytest.raises(ValueError, match=match):
        ImagePreprocess(256).fit(x)


def test_checkpoints_store_plain_data(tmp_path):
    # the preprocessing is stored as tensors and numbers: no class pickled by its module path
    image = ImagePreprocess(17, lam=1e-3).fit(torch.randint(0, 17, (30, 4)).float())
    table = TabularPreprocess().fit(torch.randn(30, 3))
    for kind, pre in (("image", image), ("tabular", table)):
        path = tmp_path / f"{kind}.pt"
        payload = {"model": {}, "state_dict": {}, "data": {"name": "moons"}}
        ckpt.save({**payload, "preprocess": {"kind": kind, "state": pre.state_dict()}}, path)
        with zipfile.ZipFile(path) as z:
            pickled = b"".join(z.read(n) for n in z.namelist() if n.endswith(".pkl"))
        assert b"zuko_lu" not in pickled and b"Preprocess" not in pickled

        new = ckpt.preprocess_from(ckpt.load(path)["preprocess"])
        assert type(new) is type(pre)
        assert torch.equal(new.mean, pre.mean) and torch.equal(new.std, pre.std)


def test_old_checkpoints_load(tmp_path):
    # as written before the move to float64 tables: float32 buffers, the same keys
    old = {
        "format": ckpt.FORMAT,
        "model": {},
        "state_dict": {},
        "data": {"name": "moons"},
        "preprocess": {
            "kind": "tabular",
            "state": {"mean": torch.tensor([1.0, 2.0]), "std": torch.tensor([0.5, 4.0])},
        },
    }
    torch.save(old, tmp_path / "old.pt")
    pre = ckpt.preprocess_from(ckpt.load(tmp_path / "old.pt")["preprocess"])
    assert pre.mean.dtype == torch.float64 and pre.mean.tolist() == [1.0, 2.0]
    y, ladj = pre(torch.tensor([[1.5, 4.0]]))
    assert y.tolist() == [[1.0, 0.5]] and ladj.item() == pytest.approx(-math.log(2.0))

    old["preprocess"] = {
        "kind": "image",
        "state": {
            "mean": torch.zeros(4),
            "std": torch.ones(4),
            "_extra_state": {"levels": 17, "lam": 1e-3},
        },
    }
    torch.save(old, tmp_path / "old.pt")
    pre = ckpt.preprocess_from(ckpt.load(tmp_path / "old.pt")["preprocess"])
    assert (pre.levels, pre.lam, pre.mean.dtype) == (17, 1e-3, torch.float32)


def test_command_line_refuses_and_accepts(tmp_path, capsys):
    from zuko_lu.experiments.cli import main

    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(size=120), np.full(120, 3.0)], axis=1)
    np.savetxt(tmp_path / "constant.csv", x, delimiter=",", header="a,b", comments="")
    out = tmp_path / "run"
    train = ["train", "--epochs", "1", "--batch-size", "32", "--no-progress", "--out", str(out)]
    code = main([*train, "--data", "csv", "--path", str(tmp_path / "constant.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "column 1 (0-based) is constant (3)" in err
    assert err.count("\n") == 1 and "Traceback" not in err

    # timestamps and values beyond float32 train, evaluate and sample with finite numbers
    x = np.stack([1.7e9 + rng.uniform(-1, 1, 120), 1e39 * rng.normal(size=120)], axis=1)
    np.savetxt(tmp_path / "wide.csv", x, delimiter=",")
    code = main([*train, "--data", "csv", "--path", str(tmp_path / "wide.csv")])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["mean"])
    code = main(["sample", str(out), "-n", "50", "--out", str(tmp_path / "s")])
    assert code == 0, capsys.readouterr().err
    samples = np.load(tmp_path / "s.npy")
    assert samples.dtype == np.float64 and np.isfinite(samples).mean() > 0.9
