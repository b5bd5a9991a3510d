r"""Writes the intersphinx inventories of torch, zuko and Pyro that the docs link to.

The docs build offline, so intersphinx cannot download ``objects.inv`` files. This script
writes small ones, ``docs/_inv/{torch,zuko,pyro}.inv``, for the names the docs
cross-reference (in docstrings, signatures, base classes and pages), pointing at the
projects' online documentation. Every name is imported from the installed package, which
gives its role (module, class, function, method) and, for classes that a package
re-exports, its defining name, so that both spellings resolve.

Usage (from the repository root)::

    python docs/inventories.py          # rewrites docs/_inv/*.inv
    python docs/inventories.py --check  # exits 1 if a committed inventory is stale

The docs build runs the check too (see ``docs/_ext/zuko_lu_docs.py``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import zlib

from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "_inv"

# project -> (documentation root, {public name: page and anchor, relative to the root}).
# An anchor "" is the public name itself; "@" stands for the defining module's full name
# of the object (module.qualname), as autodoc writes it on pages that document modules.
TORCH = {
    "torch": "torch.html#module-torch",
    "torch.Tensor": "tensors.html#torch.Tensor",
    "torch.Generator": "generated/torch.Generator.html#torch.Generator",
    "torch.device": "tensor_attributes.html#torch.device",
    "torch.dtype": "tensor_attributes.html#torch.dtype",
    "torch.manual_seed": "generated/torch.manual_seed.html#torch.manual_seed",
    "torch.linalg.cond": "generated/torch.linalg.cond.html#torch.linalg.cond",
    "torch.linalg.lu": "generated/torch.linalg.lu.html#torch.linalg.lu",
    "torch.linalg.lu_factor": "generated/torch.linalg.lu_factor.html#torch.linalg.lu_factor",
    "torch.linalg.qr": "generated/torch.linalg.qr.html#torch.linalg.qr",
    "torch.linalg.solve": "generated/torch.linalg.solve.html#torch.linalg.solve",
    "torch.linalg.solve_triangular": (
        "generated/torch.linalg.solve_triangular.html#torch.linalg.solve_triangular"
    ),
    "torch.nn.Module": "generated/torch.nn.Module.html#torch.nn.Module",
    "torch.nn.ModuleList": "generated/torch.nn.ModuleList.html#torch.nn.ModuleList",
    "torch.nn.Parameter": (
        "generated/torch.nn.parameter.Parameter.html#torch.nn.parameter.Parameter"
    ),
    "torch.nn.ReLU": "generated/torch.nn.ReLU.html#torch.nn.ReLU",
    "torch.nn.Module.load_state_dict": (
        "generated/torch.nn.Module.html#torch.nn.Module.load_state_dict"
    ),
    "torch.nn.Module.to": "generated/torch.nn.Module.html#torch.nn.Module.to",
    "torch.nn.functional.linear": (
        "generated/torch.nn.functional.linear.html#torch.nn.functional.linear"
    ),
    "torch.nn.functional.softplus": (
        "generated/torch.nn.functional.softplus.html#torch.nn.functional.softplus"
    ),
    "torch.optim.Adam": "generated/torch.optim.Adam.html#torch.optim.Adam",
    "torch.distributions": "distributions.html#module-torch.distributions",
    "torch.distributions.constraints": "distributions.html#module-torch.distributions.constraints",
    "torch.distributions.Distribution": "distributions.html#@",
    "torch.distributions.Normal": "distributions.html#@",
    "torch.distributions.Transform": "distributions.html#@",
    "torch.distributions.ComposeTransform": "distributions.html#@",
    "torch.distributions.TransformedDistribution": "distributions.html#@",
}

ZUKO = {
    "zuko": "index.html",
    "zuko.distributions.DiagNormal": "api/zuko.distributions.html#@",
    "zuko.flows.MAF": "api/zuko.flows.autoregressive.html#@",
    "zuko.flows.MaskedAutoregressiveTransform": "api/zuko.flows.autoregressive.html#@",
    "zuko.flows.NSF": "api/zuko.flows.spline.html#@",
    "zuko.flows.NCSF": "api/zuko.flows.spline.html#@",
    "zuko.flows.RealNVP": "api/zuko.flows.coupling.html#@",
    "zuko.flows.NICE": "api/zuko.flows.coupling.html#@",
    "zuko.flows.GeneralCouplingTransform": "api/zuko.flows.coupling.html#@",
    "zuko.flows.NAF": "api/zuko.flows.neural.html#@",
    "zuko.flows.UNAF": "api/zuko.flows.neural.html#@",
    "zuko.flows.GF": "api/zuko.flows.gaussianization.html#@",
    "zuko.flows.ElementWiseTransform": "api/zuko.flows.gaussianization.html#@",
    "zuko.flows.SOSPF": "api/zuko.flows.polynomial.html#@",
    "zuko.flows.BPF": "api/zuko.flows.polynomial.html#@",
    "zuko.flows.CNF": "api/zuko.flows.continuous.html#@",
    "zuko.flows.FFJTransform": "api/zuko.flows.continuous.html#@",
    "zuko.lazy.Flow": "api/zuko.lazy.html#@",
    "zuko.lazy.LazyTransform": "api/zuko.lazy.html#@",
    "zuko.lazy.LazyComposedTransform": "api/zuko.lazy.html#@",
    "zuko.lazy.LazyInverse": "api/zuko.lazy.html#@",
    "zuko.lazy.UnconditionalDistribution": "api/zuko.lazy.html#@",
    "zuko.lazy.UnconditionalTransform": "api/zuko.lazy.html#@",
    "zuko.nn.MLP": "api/zuko.nn.html#@",
    "zuko.transforms.DependentTransform": "api/zuko.transforms.html#@",
    "zuko.transforms.LULinearTransform": "api/zuko.transforms.html#@",
    "zuko.transforms.MonotonicRQSTransform": "api/zuko.transforms.html#@",
    "zuko.transforms.SoftclipTransform": "api/zuko.transforms.html#@",
}

PYRO = {
    "pyro": "index.html",
    "pyro.sample": "primitives.html#pyro.sample",
    "pyro.param": "primitives.html#pyro.param",
    "pyro.clear_param_store": "primitives.html#pyro.clear_param_store",
    "pyro.distributions.TransformedDistribution": "distributions.html#",
    "pyro.distributions.Normal": "distributions.html#",
    "pyro.distributions.ConditionalTransformedDistribution": "distributions.html#",
    "pyro.distributions.TransformModule": "distributions.html#",
    "pyro.distributions.ComposeTransformModule": "distributions.html#",
    "pyro.distributions.ConditionalTransformModule": "distributions.html#",
    "pyro.distributions.transforms.iterated": "distributions.html#",
    "pyro.distributions.transforms.ELUTransform": "distributions.html#",
    "pyro.distributions.transforms.GeneralizedChannelPermute": "distributions.html#",
    "pyro.distributions.transforms.affine_autoregressive": "distributions.html#",
    "pyro.nn.DenseNN": "nn.html#@",
    "pyro.infer.SVI": "inference_algos.html#@",
    "pyro.infer.Trace_ELBO": "inference_algos.html#@",
    "pyro.infer.autoguide.AutoNormalizingFlow": "infer.autoguide.html#",
    "pyro.contrib.zuko.ZukoToPyro": "contrib.zuko.html#",
}

PROJECTS = {
    "torch": ("torch", "torch", TORCH),
    "zuko": ("zuko", "zuko", ZUKO),
    "pyro": ("Pyro", "pyro", PYRO),
}


def resolve(name: str) -> object:
    r"""Imports a dotted name, attributes first: ``pyro.distributions.transforms.iterated``
    is the function that the package exports, not a submodule of the same name."""

    parts = name.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            obj = importlib.import_module(".".join(parts[:i]))
    return obj


def role(obj: object, name: str) -> str:
    if inspect.ismodule(obj):
        return "py:module"
    if inspect.isclass(obj):
        return "py:class"
    owner = resolve(name.rpartition(".")[0])
    return "py:method" if inspect.isclass(owner) else "py:function"


def defining_name(obj: object) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if inspect.isclass(obj) and module and qualname:
        return f"{module}.{qualname}"
    return None


def entries(project: str) -> list[tuple[str, str, str]]:
    r"""Returns the sorted (name, role, uri) entries of a project's inventory."""

    table = PROJECTS[project][2]
    found = {}
    for name, uri in table.items():
        obj = resolve(name)
        kind = role(obj, name)
        canonical = defining_name(obj)
        if uri.endswith("#"):
            uri += name
        elif uri.endswith("#@"):
            uri = uri[:-1] + (canonical or name)
        found[name] = (kind, uri)
        if canonical and canonical != name:
            found.setdefault(canonical, (kind, uri))
    return sorted((name, kind, uri) for name, (kind, uri) in found.items())


def encode(project: str, version: str, rows: list[tuple[str, str, str]]) -> bytes:
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{name} {kind} 1 {uri} -\n" for name, kind, uri in rows)
    return header.encode() + zlib.compress(body.encode(), 9)


def decode(path: Path) -> list[tuple[str, str, str]]:
    r"""Reads back the (name, role, uri) entries of an inventory written by :func:`encode`."""

    data = path.read_bytes()
    for _ in range(4):
        data = data[data.index(b"\n") + 1 :]
    rows = []
    for line in zlib.decompress(data).decode().splitlines():
        name, kind, _, uri, _ = line.split(" ")
        rows.append((name, kind, uri))
    return sorted(rows)


def stale() -> list[str]:
    r"""Returns the projects whose committed inventory differs from :func:`entries`."""

    out = []
    for project in PROJECTS:
        path = FOLDER / f"{project}.inv"
        if not path.exists() or decode(path) != entries(project):
            out.append(project)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args()

    if args.check:
        projects = stale()
        if projects:
            print(f"stale inventories: {', '.join(projects)}; run python docs/inventories.py")
            return 1
        return 0

    FOLDER.mkdir(exist_ok=True)
    for project, (title, package, _) in PROJECTS.items():
        version = importlib.import_module(package).__version__.split("+")[0]
        major_minor = ".".join(version.split(".")[:2])
        rows = entries(project)
        (FOLDER / f"{project}.inv").write_bytes(encode(title, major_minor, rows))
        print(f"{project}: {len(rows)} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
