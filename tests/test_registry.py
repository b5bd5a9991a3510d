r"""Tests of the entry-point registry, with throwaway distributions on sys.path."""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import importlib.util
import subprocess
import sys

from pathlib import Path

import pytest
import torch
import zuko

from checks import check_transform

from zuko_lu import compose, registry

OURS = {
    group: sorted(
        ep.name for ep in metadata.entry_points(group=group) if ep.dist.name == "zuko-lu"
    )
    for group in registry.GROUPS
}

TOY = '''
import torch
import torch.nn as nn

from zuko.lazy import LazyTransform
from zuko.transforms import DependentTransform, MonotonicAffineTransform


class ToyAffine(LazyTransform):
    """An elementwise affine map whose shift and scale a context may set."""

    def __init__(self, features, context=0):
        super().__init__()
        self.shift = nn.Parameter(0.1 * torch.randn(features))
        self.scale = nn.Parameter(0.1 * torch.randn(features))
        self.hyper = nn.Linear(context, 2 * features) if context else None

    def forward(self, c=None):
        shift, scale = self.shift, self.scale
        if self.hyper is not None:
            a, b = self.hyper(c).chunk(2, dim=-1)
            shift, scale = shift + a, scale + b
        return DependentTransform(MonotonicAffineTransform(shift, scale), 1)


def not_lazy(features, context=0):
    return nn.Identity()


ALIAS = ToyAffine
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    r"""Returns a function that writes a throwaway distribution (a ``*.dist-info`` folder
    and, optionally, a module) and puts it on :py:`sys.path`."""

    modules = []

    def make(dist: str, entry_points: str, module: str | None = None) -> None:
        root = tmp_path / dist
        info = root / f"{dist}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(entry_points)
        if module is not None:
            (root / f"{module}.py").write_text(TOY)
            modules.append(module)
        monkeypatch.syspath_prepend(str(root))  # also invalidates the import caches
        importlib.invalidate_caches()

    yield make

    for module in modules:
        sys.modules.pop(module, None)


def test_installed_entry_points():
    # zuko-lu declares only what it defines
    assert OURS["zuko.transforms"] == ["leaky_softplus", "lu"]
    assert OURS["zuko.flows"] == ["glow", "lumaf", "lunet", "lunsf", "lurealnvp"]
    assert set(OURS["pyro.transforms"]) == {
        "lu_linear",
        "conditional_lu_linear",
        "leaky_softplus",
        "lu_net",
        "conditional_lu_net",
        "lu_conv1x1",
        "conditional_lu_conv1x1",
        "glow",
        "conditional_glow",
    }
    for group in registry.GROUPS:
        for ep in metadata.entry_points(group=group):
            if ep.dist.name == "zuko-lu":
                assert ep.value.startswith("zuko_lu."), ep
    for group, ours in OURS.items():
        assert set(ours) <= set(registry.names(group))
        assert registry.names(group) == sorted(set(registry.names(group)))


ZUKO_FLOWS = ["maf", "nsf", "ncsf", "nice", "realnvp", "naf", "unaf", "sospf", "bpf", "gf", "cnf"]
ZUKO_TRANSFORMS = ["maf", "nsf", "coupling", "naf", "softclip", "elementwise", "ffj"]


def test_builtins_and_sources():
    for group, builtins in (("zuko.flows", ZUKO_FLOWS), ("zuko.transforms", ZUKO_TRANSFORMS)):
        assert set(registry.BUILTINS[group]) == set(builtins)
        sources = registry.names(group, sources=True)
        assert list(sources) == registry.names(group)
        for name in builtins:
            assert sources[name] == "zuko", name
        for name in OURS[group]:
            assert sources[name] == "zuko-lu", name
    assert registry.names("pyro.transforms", sources=True) == {
        name: "zuko-lu" for name in sorted(OURS["pyro.transforms"])
    }
    assert registry.load("zuko.flows", "maf") is zuko.flows.MAF
    assert registry.load("zuko.flows", "maf", distribution="zuko") is zuko.flows.MAF


@pytest.mark.parametrize("name", registry.names("zuko.transforms"))
def test_load_transforms(name: str):
    assert callable(registry.load("zuko.transforms", name))
    flow = compose([name, "lu"], 3, context=2)
    c, x = torch.randn(4, 2), torch.randn(4, 3)
    assert flow(c).log_prob(x).shape == (4,)


@pytest.mark.parametrize("name", registry.names("zuko.flows"))
def test_load_flows(name: str):
    # glow takes a square number of features, one 1 x 4 x 4 image here
    features, kwargs = (
        (16, {"levels": 1, "steps": 1, "hidden_channels": 4}) if name == "glow" else (3, {})
    )
    flow = registry.load("zuko.flows", name)(features, context=2, **kwargs)
    c = torch.randn(2)
    if name != "cnf":  # an ODE per call: build only
        assert flow(c).log_prob(torch.randn(4, features)).shape == (4,)


def test_nsf_bound():
    # the registry's nsf is zuko's NSF with a settable spline domain: the same modules
    nsf = registry.load("zuko.flows", "nsf")
    torch.manual_seed(0)
    ours = nsf(3, context=2, transforms=2)
    torch.manual_seed(0)
    theirs = zuko.flows.NSF(3, context=2, transforms=2)
    state = theirs.state_dict()
    assert list(ours.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in ours.state_dict().items())
    c, x = torch.randn(4, 2), torch.randn(4, 3)
    assert torch.equal(ours(c).log_prob(x), theirs(c).log_prob(x))

    # outside [-B, B] the splines are the identity; inside they are not
    wide = nsf(2, bound=20.0, transforms=1)
    t = wide.transform.transforms[0](None)
    x = torch.tensor([[12.0, -15.0], [25.0, -30.0]])
    y = t(x)
    assert not torch.allclose(y[0], x[0])
    assert torch.equal(y[1], x[1])
    narrow = registry.load("zuko.flows", "lunsf")(2, bound=20.0, transforms=1)
    assert narrow.transform.transforms[0].univariate.keywords["bound"] == 20.0


@pytest.mark.parametrize("name", OURS["pyro.transforms"])
def test_load_pyro(name: str):
    if importlib.util.find_spec("zuko_lu.pyro") is None:
        pytest.skip("zuko_lu.pyro is not written yet")
    assert callable(registry.load("pyro.transforms", name))


def test_no_zuko_import():
    # reading the registry imports neither zuko nor torch (the Pyro face relies on it)
    code = (
        "import sys; from zuko_lu import registry; registry.names('zuko.transforms'); "
        "assert 'zuko' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pyro_group_without_zuko():
    if importlib.util.find_spec("zuko_lu.pyro") is None:
        pytest.skip("zuko_lu.pyro is not written yet")
    code = (
        "import sys; from zuko_lu import registry; "
        "[registry.load('pyro.transforms', n) for n in registry.names('pyro.transforms')]; "
        "assert 'zuko' not in sys.modules, 'the Pyro face imported zuko'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugin(plugin):
    plugin(
        "toyplugin",
        "[zuko.transforms]\ntoy_affine = toyplugin:ToyAffine\ntoy_bad = toyplugin:not_lazy\n",
        module="toyplugin",
    )
    assert {"toy_affine", "toy_bad", "lu", "maf"} <= set(registry.names("zuko.transforms"))
    assert registry.load("zuko.transforms", "toy_affine").__module__ == "toyplugin"
    assert registry.load("zuko.transforms", "lu", distribution="Zuko_LU").__name__ == "LULinear"

    flow = compose(["toy_affine", "lu", "maf", "toy_affine", "lu"], 3, context=2)
    assert type(flow.transform.transforms[0]).__name__ == "ToyAffine"
    c, x = torch.randn(8, 2), torch.randn(8, 3)
    check_transform(flow(c).transform, x)

    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    data = 2.0 + 0.5 * torch.randn(64, 3)
    losses = []
    for _ in range(10):
        loss = -flow(torch.zeros(2)).log_prob(data).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    with pytest.raises(TypeError, match="toy_bad"):
        compose(["toy_bad"], 3)


def test_duplicates(plugin):
    plugin("toya", "[zuko.transforms]\ntoy_dup = toya_mod:ToyAffine\n", module="toya_mod")
    plugin("toyb", "[zuko.transforms]\ntoy_dup = toyb_mod:ToyAffine\n", module="toyb_mod")
    # the same target registered twice is no conflict
    plugin("toyc", "[zuko.transforms]\ntoy_same = toya_mod:ALIAS\n")
    plugin("toyd", "[zuko.transforms]\ntoy_same = toya_mod:ALIAS\n")

    assert registry.names("zuko.transforms").count("toy_dup") == 1
    with pytest.raises(LookupError, match=r"toy_dup.*'toya' \(toya_mod:ToyAffine\).*'toyb'"):
        registry.load("zuko.transforms", "toy_dup")
    with pytest.raises(LookupError, match="several"):
        compose(["toy_dup"], 3)

    assert (
        registry.load("zuko.transforms", "toy_dup", distribution="toyb").__module__ == "toyb_mod"
    )
    assert registry.load("zuko.transforms", "toy_same").__name__ == "ToyAffine"


def test_import_failures(plugin):
    plugin(
        "toybroken",
        "[zuko.transforms]\nmissing_module = toy_no_such_module:Thing\n"
        "missing_name = toybroken_mod:NoSuchName\n",
        module="toybroken_mod",
    )
    with pytest.raises(ImportError, match=r"'missing_module'.*'toybroken'") as info:
        registry.load("zuko.transforms", "missing_module")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)

    with pytest.raises(ImportError, match=r"'toybroken'.*toybroken_mod:NoSuchName") as info:
        registry.load("zuko.transforms", "missing_name")
    assert isinstance(info.value.__cause__, AttributeError)

    # a broken entry point does not break the others
    assert registry.load("zuko.transforms", "lu").__name__ == "LULinear"


def test_unknown_names():
    with pytest.raises(LookupError, match=r"'nope' in group 'zuko.flows'.*'lumaf', 'lunet'"):
        registry.load("zuko.flows", "nope")
    with pytest.raises(LookupError, match="by distribution 'zuko'"):
        registry.load("zuko.transforms", "lu", distribution="zuko")
    with pytest.raises(LookupError, match="known names: none"):
        registry.load("no.such.group", "lu")
    assert registry.names("no.such.group") == []
    with pytest.raises(TypeError):
        registry.names(None)
    with pytest.raises(TypeError):
        registry.load("zuko.flows", 3)


def test_entry_point_takes_precedence(plugin):
    # a plugin's "maf" wins over zuko's built-in, and is reported as the plugin's
    plugin("toymaf", "[zuko.transforms]\nmaf = toymaf_mod:ToyAffine\n", module="toymaf_mod")
    assert registry.names("zuko.transforms", sources=True)["maf"] == "toymaf"
    assert registry.load("zuko.transforms", "maf").__name__ == "ToyAffine"
    assert registry.load("zuko.transforms", "maf", distribution="zuko").__name__ == "maf"
    flow = compose(["maf", "lu"], 3)
    assert type(flow.transform.transforms[0]).__name__ == "ToyAffine"
