r"""LUNet's log_prob and sampling under torch.compile match eager execution."""

import pytest
import torch

from zuko_lu import LUNet


@pytest.mark.parametrize("train", [True, False])
def test_lunet_compiles(device, train):
    torch._dynamo.reset()
    flow = LUNet(5, transforms=2, init="orthogonal", learnable_alpha=True).to(device)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    flow.train(train)

    x = torch.randn(64, 5, device=device)
    z = torch.randn(64, 5, device=device)

    # "aot_eager" traces and runs the graphs without a C++ toolchain (zuko's composed
    # transform breaks the graph between blocks); benchmarks/compile.py measures the
    # speed of the inductor backend
    log_prob = torch.compile(lambda x: flow().log_prob(x), backend="aot_eager")
    sample = torch.compile(lambda z: flow().transform.inv(z), backend="aot_eager")

    with torch.no_grad():
        assert torch.allclose(log_prob(x), flow().log_prob(x), atol=1e-5)
        assert torch.allclose(sample(z), flow().transform.inv(z), atol=1e-5)

    # a parameter edit between compiled calls reaches them (eval mode: the eval cache
    # runs eagerly, outside the graphs, and is invalidated as in eager mode)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(0.9)
        assert torch.allclose(log_prob(x), flow().log_prob(x), atol=1e-5)
        assert torch.allclose(sample(z), flow().transform.inv(z), atol=1e-5)
