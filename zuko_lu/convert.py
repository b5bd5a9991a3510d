r"""Conversions between the faces: an LU-Net of the zuko face to the Pyro face and back.

This is the only module that knows both faces. It imports the Pyro face
(:mod:`zuko_lu.pyro`), and the zuko face (:mod:`zuko_lu.flows`, and with it zuko) only
when a conversion needs it: :func:`to_zuko` imports zuko, :func:`from_zuko` is given a
zuko flow, so zuko is already imported.

Both faces keep an LU block's parameters in a :class:`~zuko_lu.parameters.LUParameters`
(``params``) and an activation's slope in ``alpha`` (and ``logit`` if learnable), so the
weights are copied block by block, walking the modules: the parameters as they are, and
the layers of a hyper-network in order (:class:`zuko.nn.MLP` and
:class:`pyro.nn.DenseNN` hold the same linear layers, named differently).
"""

from __future__ import annotations

__all__ = [
    "from_zuko",
    "to_zuko",
]

import sys

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from pyro.distributions.conditional import ConditionalComposeTransformModule
from pyro.distributions.torch_transform import ComposeTransformModule
from torch import Tensor

from .options import IDENTITY, ORTHOGONAL
from .parameters import LUParameters
from .pyro import conditional_lu_net, lu_net


def _linears(hyper: nn.Module) -> list[nn.Module]:
    # the layers of a hyper-network that hold weights, in order
    leaves = [m for m in hyper.modules() if not any(m.children())]
    return [m for m in leaves if isinstance(getattr(m, "weight", None), Tensor)]


def _options(blocks: Sequence[nn.Module], name: str) -> dict:
    # The constructor options of an LU-Net (of either face), read off its blocks.
    lus, acts = blocks[::2], blocks[1::2]
    if (
        len(blocks) < 3
        or len(blocks) % 2 == 0
        or not all(isinstance(getattr(b, "params", None), LUParameters) for b in lus)
        or not all(isinstance(getattr(a, "alpha", None), float) for a in acts)
    ):
        raise ValueError(f"{name}: expected LU blocks joined by leaky-softplus activations")

    p, hyper = lus[0].params, getattr(lus[0], "hyper", None)
    options = dict(
        transforms=len(acts),
        alpha=acts[0].alpha,
        learnable_alpha=acts[0].logit is not None,
        bias=p.bias is not None,
        init=IDENTITY if p.perm is None else ORTHOGONAL,
        diagonal=p.diagonal,
    )
    if hyper is not None:
        leaves = [m for m in hyper.modules() if not any(m.children())]
        linear = _linears(hyper)
        if not all(isinstance(m, (nn.ReLU, *map(type, linear))) for m in leaves):
            raise ValueError(f"{name}: only hyper-networks with ReLU activations convert")
        options["context"] = getattr(lus[0], "context_dim", getattr(lus[0], "context", 0))
        options["conditioning"] = lus[0].conditioning
        options["hidden"] = [m.weight.shape[-2] for m in linear[:-1]]
    return options


@torch.no_grad()
def _copy(source: Sequence[nn.Module], target: Sequence[nn.Module]) -> None:
    # Copies the weights block by block: LU parameters, hyper-network layers in order,
    # activation slopes.
    for src, dst in zip(source, target, strict=True):
        if isinstance(getattr(src, "params", None), LUParameters):
            dst.params.load_state_dict(src.params.state_dict())
            if getattr(src, "hyper", None) is not None:
                for a, b in zip(_linears(src.hyper), _linears(dst.hyper), strict=True):
                    b.load_state_dict(a.state_dict())
        else:
            dst.alpha = src.alpha
            if src.logit is not None:
                dst.logit.copy_(src.logit)


def _convert(source: nn.Module, blocks: list, make: Callable, target: Callable) -> nn.Module:
    # Builds `make()` (without touching the global RNG) on the source's device and dtype
    # and copies the weights of the source's blocks into the target's.
    with torch.random.fork_rng(devices=[]):
        module = make()
    tensor = next(source.parameters())
    module = module.to(device=tensor.device, dtype=tensor.dtype)
    _copy(blocks, list(target(module)))
    return module


def from_zuko(flow: nn.Module) -> ComposeTransformModule | ConditionalComposeTransformModule:
    r"""Returns the Pyro LU-Net with the weights of a zuko :class:`zuko_lu.LUNet`.

    Block :math:`i` of the flow (``flow.transform.transforms[i]``) becomes part
    :math:`i` of the Pyro module, its parameters copied as they are and a conditional
    block's hyper-network (:class:`zuko.nn.MLP`) layer by layer into a
    :class:`pyro.nn.DenseNN`. Then, for data :math:`x`, :py:`flow().log_prob(x)` equals
    :py:`TransformedDistribution(Normal(0, 1).to_event(1), [from_zuko(flow).inv]).log_prob(x)`
    (with :class:`ConditionalTransformedDistribution` and :py:`.condition(c)` for
    :py:`flow(c)`). The flow is left as it is.

    Arguments:
        flow: An LU-Net built by :class:`zuko_lu.LUNet` (ReLU hyper-networks).

    Returns:
        A Pyro LU-Net, as :func:`zuko_lu.pyro.lu_net` or
        :func:`zuko_lu.pyro.conditional_lu_net` build it.

    Raises:
        TypeError: If `flow` is not a :class:`zuko_lu.LUNet`.

    Example:
        >>> from zuko_lu import LUNet
        >>> _ = torch.manual_seed(0)
        >>> from_zuko(LUNet(2, transforms=1))[0].params.R.shape
        torch.Size([2, 2])
    """

    # A zuko_lu.LUNet exists only once zuko_lu.flows is imported: reading sys.modules
    # keeps a call with anything else from importing zuko.
    flows = sys.modules.get("zuko_lu.flows")
    if flows is None or not isinstance(flow, flows.LUNet):
        raise TypeError(
            "flow: expected a zuko_lu.LUNet (LU blocks joined by leaky-softplus "
            f"activations, as zuko_lu.LUNet builds it), got {type(flow).__name__}"
        )

    blocks = list(flow.transform.transforms)
    o = _options(blocks, "flow")
    D = blocks[0].params.features
    if "context" in o:
        o["hidden_dims"] = o.pop("hidden")
        make = lambda: conditional_lu_net(D, o.pop("context"), **o)
    else:
        make = lambda: lu_net(D, **o)

    return _convert(flow, blocks, make, lambda m: m)


def to_zuko(module: nn.Module) -> nn.Module:
    r"""Returns the zuko :class:`zuko_lu.LUNet` with the weights of a Pyro LU-Net: the
    inverse of :func:`from_zuko`.

    This function imports zuko (and so turns off torch's distribution argument
    validation).

    Arguments:
        module: A Pyro LU-Net built by :func:`zuko_lu.pyro.lu_net` or
            :func:`zuko_lu.pyro.conditional_lu_net` (ReLU hyper-networks).

    Returns:
        The zuko LU-Net.

    Raises:
        TypeError: If `module` is not a sequence of modules.
        ValueError: If its parts are not LU blocks joined by activations.

    Example:
        >>> from zuko_lu.pyro import lu_net
        >>> _ = torch.manual_seed(0)
        >>> to_zuko(lu_net(2, transforms=1))().log_prob(torch.zeros(1, 2)).shape
        torch.Size([1])
    """

    if not isinstance(module, nn.Module) or not hasattr(module, "__iter__"):
        raise TypeError(
            "module: expected a Pyro LU-Net (zuko_lu.pyro.lu_net or conditional_lu_net), "
            f"got {type(module).__name__}"
        )

    from .flows import LUNet  # imports zuko

    blocks = list(module)
    o = _options(blocks, "module")
    if "hidden" in o:
        o["hidden_features"] = o.pop("hidden")
    D = blocks[0].params.features

    return _convert(module, blocks, lambda: LUNet(D, **o), lambda f: f.transform.transforms)
