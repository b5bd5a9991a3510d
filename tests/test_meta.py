r"""The hot paths on the meta device, a stand-in for an accelerator on any machine.

Tensors on the meta device have shapes but no data: an operation that mixes in a CPU
tensor, or reads a value (``.item()``, ``bool(tensor)``), fails there. So these tests
check, without a GPU, what an accelerator needs: no CPU tensor made on the way, no
host-device synchronisation. (The CPU-only paths, the panel products and the chunked
activation inverse, are checked against the plain ones in the other test modules.)
"""

import pytest
import torch

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from zuko_lu import LULinear, LUNet
from zuko_lu.pyro import conditional_lu_net, lu_net

META = torch.device("meta")


class NoCPUTensors(TorchDispatchMode):
    r"""Fails on any operation that takes or makes a CPU tensor of more than one element
    (meta kernels do not check that their inputs share a device)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel() > 1:
                raise AssertionError(f"{func} takes or makes a CPU tensor of shape {t.shape}")
        return out


@pytest.fixture(autouse=True)
def strict():
    # torch's distributions check their arguments' values (Pyro turns this on): a read
    # that the meta device refuses, and not one of ours
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    yield
    torch.distributions.Distribution.set_default_validate_args(validate)


@pytest.mark.parametrize("context", [0, 3])
def test_lunet_on_meta(context):
    flow = LUNet(300, context=context, transforms=2, learnable_alpha=True).to(META)
    c = torch.randn(400, context, device=META) if context else None

    with NoCPUTensors():
        lunet_hot_paths(flow, c)


def lunet_hot_paths(flow: LUNet, c: torch.Tensor | None) -> None:
    # training: two products (fewer rows than features) and W = L U; log_prob and rsample
    for N in (4, 400):
        x = torch.randn(N, 300, device=META)
        flow(None if c is None else c[:N]).log_prob(x).sum().backward()
    flow(None if c is None else c[0]).rsample((3,)).sum().backward()

    # eval mode: the cache (W, W^-1 by triangular solves), density and sampling
    flow.eval()
    with torch.no_grad():
        for _ in range(2):
            assert flow(None if c is None else c).log_prob(x).device == META
            assert flow(None if c is None else c[0]).sample((5,)).shape == (5, 300)


@pytest.mark.parametrize("conditioning", ["diag", "full"])
def test_conditional_block_on_meta(conditioning):
    t = LULinear(6, context=2, conditioning=conditioning).to(META)
    x, c = torch.randn(5, 6, device=META), torch.randn(5, 2, device=META)
    with NoCPUTensors():
        y, ladj = t(c).call_and_ladj(x)
        (y.sum() + ladj.sum() + t(c).inv(y).sum()).backward()


def test_pyro_on_meta():
    t = lu_net(300, transforms=2).to(META)
    ct = conditional_lu_net(8, 3, transforms=1, hidden_dims=[16]).to(META)
    x, xc = torch.randn(7, 300, device=META), torch.randn(7, 8, device=META)
    c = torch.randn(7, 3, device=META)

    with NoCPUTensors():
        y = t(x)
        (y.sum() + t.log_abs_det_jacobian(x, y).sum() + t.inv(y).sum()).backward()
        tc = ct.condition(c)
        y = tc(xc)
        (y.sum() + tc.log_abs_det_jacobian(xc, y).sum() + tc.inv(y).sum()).backward()
