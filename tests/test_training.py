r"""Tests of the training loop, the models factory, checkpoints and sampling."""

from __future__ import annotations

import math
import os

import pytest
import torch

from zuko.distributions import DiagNormal
from zuko.lazy import Flow, UnconditionalDistribution

from zuko_lu.experiments import checkpoint as ckpt
from zuko_lu.experiments.config import TrainConfig
from zuko_lu.experiments.models import (
    accepts,
    available,
    build,
    count_parameters,
    match_hidden,
    nsf_bound,
)
from zuko_lu.experiments.preprocess import TabularPreprocess
from zuko_lu.experiments.sampling import draw
from zuko_lu.experiments.training import TrainState, fit
from zuko_lu.flows import LULinear, LUNet


def toy(n: int = 256) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=generator)
    return x * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -3.0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"decay": 0},
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": math.nan},
        {"clip": -1.0},
        {"patience": 0},
        {"time_limit": 0.0},
        {"seed": -5},
    ],
)
def test_config_rejects(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_fit_learns_and_stops() -> None:
    x = toy()
    pre = TabularPreprocess().fit(x)
    saved = []
    state, best = fit(
        LUNet(2, transforms=2),
        pre,
        x,
        x[:64],
        TrainConfig(epochs=6, batch_size=32, lr=1e-2),
        save=lambda kind, state, opt: saved.append((kind, state.epoch)),
        progress=False,
    )
    assert state.epoch == 6 and state.stopped == "epochs"
    assert state.history["val"][-1] < state.history["val"][0]
    assert state.best_val == min(state.history["val"])
    assert [k for k, _ in saved].count("last") == 6 and ("best", state.best_epoch) in saved
    assert set(best) == set(LUNet(2, transforms=2).state_dict())


def test_fit_early_stopping_and_time_limit() -> None:
    x = toy()
    pre = TabularPreprocess().fit(x)
    state, _ = fit(
        LUNet(2), pre, x, x[:64], TrainConfig(epochs=50, lr=1e-9, patience=1), progress=False
    )
    assert state.stopped == "early stopping" and state.epoch < 50

    state, _ = fit(
        LUNet(2), pre, x, x[:64], TrainConfig(epochs=50, time_limit=1e-6), progress=False
    )
    assert state.stopped == "time limit" and state.epoch == 1


def test_fit_decay(monkeypatch: pytest.MonkeyPatch) -> None:
    r"""A validation loss that never improves after the first epoch: the learning rate
    halves every `decay` epochs until early stopping."""

    monkeypatch.setattr(
        "zuko_lu.experiments.training.evaluate_nll", lambda *args, **kwargs: (1.0, 0.0)
    )
    x = toy()
    pre = TabularPreprocess().fit(x)
    config = TrainConfig(epochs=50, lr=1e-3, patience=5, decay=2)
    state, _ = fit(LUNet(2), pre, x, x[:64], config, progress=False)
    assert state.stopped == "early stopping" and state.epoch == 6 and state.best_epoch == 1
    assert state.lr == 1e-3 / 4


def test_fit_resume_is_exact() -> None:
    r"""One epoch, then a resumed second one, equals two epochs in a row."""

    x = toy()
    pre = TabularPreprocess().fit(x)
    config = TrainConfig(epochs=2, batch_size=32)

    torch.manual_seed(0)
    straight = LUNet(2)
    fit(straight, pre, x, x[:64], config, progress=False)

    torch.manual_seed(0)
    first = LUNet(2)
    kept = {}
    save = lambda kind, state, opt: kept.update(state=state.to_dict(), opt=opt.state_dict())
    fit(first, pre, x, x[:64], TrainConfig(epochs=1, batch_size=32), save=save, progress=False)
    state = TrainState(**kept["state"])
    fit(first, pre, x, x[:64], config, state=state, optimizer_state=kept["opt"], progress=False)

    for a, b in zip(straight.parameters(), first.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_fit_stops_at_first_non_finite_step(monkeypatch: pytest.MonkeyPatch) -> None:
    r"""A non-finite gradient stops training at once: no step taken, no validation, no
    best checkpoint (issue 13, defect 3)."""

    # as after `import zuko`, whatever the suite imported before (pyro turns it on)
    monkeypatch.setattr(torch.distributions.Distribution, "_validate_args", False)
    x = toy()
    pre = TabularPreprocess().fit(x)
    flow = LUNet(2)
    before = [p.clone() for p in flow.parameters()]
    x_bad = x.clone()
    x_bad[::2] = math.inf  # every batch has non-finite examples
    saved = []
    save = lambda kind, state, opt: saved.append(kind)
    state, _ = fit(flow, pre, x_bad, x[:64], TrainConfig(epochs=3), save=save, progress=False)
    assert state.stopped == "diverged" and state.epoch == 1 and state.skipped == 1
    assert state.best_epoch == 0 and saved == ["last"]
    assert math.isnan(state.history["train"][0]) and math.isnan(state.history["val"][0])
    assert all(torch.equal(a, b) for a, b in zip(before, flow.parameters(), strict=True))


def test_fit_logs_epochs() -> None:
    r"""Each epoch's line has its losses and seconds; the history records the seconds."""

    x = toy()
    lines = []
    config = TrainConfig(epochs=2, batch_size=64)
    pre = TabularPreprocess().fit(x)
    state, _ = fit(LUNet(2), pre, x, x[:64], config, progress=False, log=lines.append)
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all(line.endswith(" s") and "val" in line for line in lines)
    assert len(state.history["epoch_seconds"]) == 2 and min(state.history["epoch_seconds"]) > 0
    old = TrainState(history={"train": [1.0], "val": [1.0], "time": [0.5]})
    assert old.history["epoch_seconds"] == [0.5] and "time" not in old.history


def test_models() -> None:
    assert {"lunet", "realnvp", "maf", "nsf"} <= set(available())
    with pytest.raises(ValueError, match="unknown model"):
        build("nope", 2)
    with pytest.raises(ValueError, match="hidden"):
        build("lunet", 2, hidden_features=[8])
    with pytest.raises(ValueError, match="cannot be built"):
        build("maf", 2, no_such_option=1)
    assert accepts("nsf", "bound", 5.0) and accepts("lunsf", "bound", 5.0)
    assert not accepts("maf", "bound", 5.0) and not accepts("lunet", "bound", 5.0)
    assert accepts("maf", "hidden_features", [8]) and not accepts("lunet", "hidden_features", [8])

    target = count_parameters(LUNet(16, transforms=3))
    for name in ("realnvp", "maf", "nsf"):
        h, count = match_hidden(name, 16, target)
        flow = build(name, 16, hidden_features=[h, h])
        assert count == count_parameters(flow)
        assert abs(count - target) <= abs(
            count_parameters(build(name, 16, hidden_features=[h + 1] * 2)) - target
        )

    assert nsf_bound(torch.tensor([1.0, -2.0])) == 5.0
    bound = nsf_bound(torch.tensor([0.0, 9.0]))
    flow = build("nsf", 2, bound=bound, transforms=1)
    assert bound == 10.0 and flow.transform.transforms[0].univariate.keywords["bound"] == 10.0


def test_checkpoint_roundtrip_and_errors(tmp_path: os.PathLike) -> None:
    x = toy()
    pre = TabularPreprocess().fit(x)
    flow = build("lunet", 2, transforms=2)
    payload = {
        "model": {"name": "lunet", "features": 2, "kwargs": {"transforms": 2}},
        "state_dict": flow.state_dict(),
        "preprocess": {"kind": "tabular", "state": pre.state_dict()},
        "data": {"name": "csv"},
    }
    path = tmp_path / "checkpoint.pt"
    ckpt.save(payload, path)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left

    flow2, pre2 = ckpt.restore(ckpt.load(tmp_path))
    y, _ = pre(x)
    assert torch.allclose(flow2().log_prob(pre2(x)[0]), flow().log_prob(y))

    def fails(content: object, match: str) -> None:
        bad = tmp_path / "bad.pt"
        if isinstance(content, bytes):
            bad.write_bytes(content)
        else:
            torch.save(content, bad)
        with pytest.raises(ckpt.CheckpointError, match=match):
            ckpt.restore(ckpt.load(bad))

    fails(b"\x00garbage" * 10, "not a torch file")
    fails(b"\x80" + bytes(range(256)), "corrupted")
    fails(path.read_bytes()[:200], "corrupted")  # truncated
    fails(torch.zeros(3), "not a zuko-lu checkpoint")
    fails({"state_dict": {}}, "not a zuko-lu checkpoint")
    fails({**payload, "format": "zuko-lu/99"}, "format")
    fails({"format": ckpt.FORMAT, "model": {}}, "incomplete")
    wrong = {**payload, "model": {"name": "lunet", "features": 3, "kwargs": {"transforms": 2}}}
    fails({"format": ckpt.FORMAT, **wrong}, "does not match")
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load(tmp_path / "missing.pt")


def test_draw_temperature() -> None:
    r"""Through a linear flow, the latent's scaling by T scales the samples about the
    image of the base's mean."""

    x = toy(1000)
    pre = TabularPreprocess().fit(x)
    base = UnconditionalDistribution(DiagNormal, torch.zeros(2), torch.ones(2), buffer=True)
    flow = Flow([LULinear(2, init="orthogonal")], base)
    center = draw(flow, pre, 1, temperature=1e-12)
    samples = {}
    for t in (0.5, 1.0):
        torch.manual_seed(0)
        samples[t] = draw(flow, pre, 1000, temperature=t)
        assert samples[t].shape == (1000, 2)
    assert torch.allclose(samples[0.5] - center, 0.5 * (samples[1.0] - center), atol=1e-5)
