r"""Distribution argument validation is the user's after zuko-lu imports zuko.

zuko's import turns torch's default argument validation off (the one that
:func:`pyro.enable_validation` sets); zuko-lu puts it back (:mod:`zuko_lu.validation`).
Each use of the zuko face runs with zuko, zuko-lu and sbi unloaded (so that zuko's
import runs again), in a fresh interpreter per setting.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SETUP = """
import pyro, torch
from torch.distributions import Distribution
pyro.enable_validation({flag})
assert Distribution._validate_args is {flag}
"""

CHECK = """
import pyro.distributions.util as pyro_util
flag = pyro_util.is_validation_enabled()
assert Distribution._validate_args is flag, "torch's default validation changed"
try:
    pyro.distributions.Normal(0.0, -1.0)  # an invalid scale
    raised = False
except ValueError:
    raised = True
assert raised is flag, "the invalid scale was not caught as the user asked"
"""

# each a first use of the zuko face, zuko not imported yet
USES = {
    "package name": "import zuko_lu\nflow = zuko_lu.LUNet(2)",
    "lazy names": "import zuko_lu\n[getattr(zuko_lu, n) for n in zuko_lu.__all__]",
    "flows module": "from zuko_lu.flows import LUNet\nflow = LUNet(2)",
    "hybrids module": "from zuko_lu.hybrids import LUNSF\nflow = LUNSF(2, 1)",
    "glow module": "from zuko_lu.glow import Glow\nflow = Glow((1, 4, 4), steps=1)",
    "registry": (
        "from zuko_lu import registry\n"
        "[registry.load('zuko.flows', n) for n in ('lunet', 'glow', 'maf')]"
    ),
    "from_zuko": (
        "import zuko_lu\nfrom zuko_lu.convert import from_zuko\n"
        "t = from_zuko(zuko_lu.LUNet(2, transforms=1))\n"
        "d = pyro.distributions.TransformedDistribution(\n"
        "    pyro.distributions.Normal(torch.zeros(2), 1.0).to_event(1), [t])\n"
        "assert d.log_prob(d.sample((3,))).shape == (3,)"
    ),
    "sbi": (
        "from zuko_lu.sbi import posterior_nn\n"
        "estimator = posterior_nn('lunsf', num_transforms=2)(torch.rand(20, 2), torch.rand(20, 2))"
    ),
}


# runs each use in turn, zuko, zuko-lu and sbi unloaded before each, and prints
# "<use>: ok" or the error
RUNNER = """
import sys, traceback
for use, code in USES.items():
    for name in [m for m in sys.modules if m.split(".")[0] in ("zuko", "zuko_lu", "sbi")]:
        del sys.modules[name]
    assert "zuko.distributions" not in sys.modules
    pyro.enable_validation(FLAG)
    try:
        exec(code + CHECK, {"pyro": pyro, "torch": torch, "Distribution": Distribution})
        print(f"{use}: ok")
    except Exception:
        print(f"{use}: {traceback.format_exc()}")
"""


@pytest.mark.parametrize("flag", [True, False])
def test_validation_is_kept(flag: bool):
    code = "\n".join(
        [SETUP.format(flag=flag), f"FLAG = {flag}", f"USES = {USES!r}", f"CHECK = {CHECK!r}"]
    )
    result = subprocess.run([sys.executable, "-c", code + RUNNER], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{use}: ok" for use in USES], result.stdout


def test_zuko_flows_work_with_validation_on():
    # with validation on, zuko-lu's flows evaluate and sample, without warnings
    code = SETUP.format(flag=True) + textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("error")
        import zuko_lu
        flow = zuko_lu.LUNSF(2, 3, transforms=2)
        c = torch.randn(3)
        x = flow(c).sample((4,))
        assert flow(c).log_prob(x).shape == (4,)
        assert zuko_lu.LUNet(2)().log_prob(torch.randn(4, 2)).isfinite().all()
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
