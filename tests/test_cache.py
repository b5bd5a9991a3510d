r"""Tests of the eval-mode cache of LU blocks and its invalidation."""

import pytest
import torch

from checks import roundtrip_state

from zuko_lu import LULinear, LUNet


def cached(t: LULinear) -> object:
    with torch.no_grad():
        return t()


def perturb(module: torch.nn.Module, scale: float = 0.1) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def test_cache_reused_only_in_eval_without_grad():
    t = LULinear(4)
    assert t() is not t()  # training mode
    t.eval()
    assert t() is not t()  # gradients on
    assert cached(t) is cached(t)


def test_cache_invalidated_by_optimizer_step():
    t = LULinear(4).eval()
    x = torch.randn(8, 4)
    before = cached(t)
    opt = torch.optim.Adam(t.parameters(), lr=0.1)
    t().call_and_ladj(x)[0].square().sum().backward()
    opt.step()
    after = cached(t)
    assert after is not before
    assert torch.allclose(after(x), t()(x).detach())


def test_cache_invalidated_by_load_state_dict():
    t, other = LULinear(4).eval(), LULinear(4)
    perturb(other)
    before = cached(t)
    t.load_state_dict(other.state_dict())
    x = torch.randn(8, 4)
    assert cached(t) is not before
    assert torch.allclose(cached(t)(x), other()(x))
    assert torch.allclose(cached(t).inv(x), other().inv(x), atol=1e-6)


def test_cache_invalidated_by_in_place_edit_and_clear():
    t = LULinear(4).eval()
    before = cached(t)
    perturb(t)  # under no_grad: the version counters move
    assert cached(t) is not before

    before = cached(t)
    t.params.R.data.mul_(2)  # .data is invisible to version counters ...
    t.params.clear_cache()  # ... so it needs an explicit clear
    assert cached(t) is not before


def test_cache_follows_dtype_and_device(device):
    t = LULinear(4).eval()
    x = torch.randn(8, 4)
    cached(t)(x)
    t = t.to(device, torch.float64)
    y = cached(t)(x.to(device, torch.float64))
    assert y.dtype == torch.float64 and y.device.type == device.type
    assert cached(t).inv(y).device.type == device.type


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_inverse_accuracy(dtype):
    # a trained-like block (cond(W) ~ 1e2): the cached W^-1 is as accurate as the solves
    t = LULinear(256, init="orthogonal").to(dtype)
    perturb(t, 0.05)
    x = torch.randn(1024, 256, dtype=dtype)
    with torch.no_grad():
        y = t()(x)
        err_solve = (t().inv(y) - x).abs().max()
        t.eval()
        err_cached = (cached(t).inv(y) - x).abs().max()
    assert cached(t)._W_inv is not None
    assert err_cached <= 4 * err_solve + 10 * torch.finfo(dtype).eps


def test_lunet_eval_matches_train():
    flow = LUNet(6, transforms=2, init="orthogonal")
    perturb(flow)
    x = torch.randn(16, 6)
    with torch.no_grad():
        lp, z = flow().log_prob(x), flow().transform(x)
        flow.eval()
        assert torch.allclose(flow().log_prob(x), lp, atol=1e-5)
        assert torch.allclose(flow().transform.inv(z), x, atol=1e-5)
        fresh = roundtrip_state(flow, LUNet(6, transforms=2, init="orthogonal").eval())
        assert torch.allclose(fresh().log_prob(x), lp, atol=1e-5)


def test_copies_and_pickles_start_with_an_empty_eval_cache():
    # the cached W are views of the module's parameters: a copy must not carry them
    import copy
    import pickle

    from zuko_lu import LULinear

    torch.manual_seed(0)
    t = LULinear(3)
    t.eval()
    x = torch.randn(4, 3)
    with torch.no_grad():
        y = t()(x)
    assert t.params._cache.value is not None
    for other in (copy.deepcopy(t), pickle.loads(pickle.dumps(t))):
        assert other.params._cache.value is None
        with torch.no_grad():
            assert torch.equal(other()(x), y)
