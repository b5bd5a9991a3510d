r"""The import graph of the package keeps the layout's rules (see the README's "How the
code is laid out").

The graph is read with :mod:`ast` from every module of ``zuko_lu/`` (no import runs):
an edge for each ``import`` and ``from ... import`` statement, at module level or inside
a function, relative imports resolved, and a *lazy* edge for each entry of a module's
``_LAZY`` table (the names it loads on first access, PEP 562).
"""

from __future__ import annotations

import ast

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zuko_lu"

# The maths core: torch only.
CORE = {
    "zuko_lu.triangular",
    "zuko_lu.transforms",
    "zuko_lu.parameters",
    "zuko_lu.options",
    "zuko_lu.cache",
    "zuko_lu.compat",
    "zuko_lu.image_core",
}
# The zuko face (which imports zuko) and the Pyro face (which must not).
ZUKO_FACE = {"zuko_lu.flows", "zuko_lu.hybrids", "zuko_lu.glow"}
PYRO_FACE = {"zuko_lu.pyro", "zuko_lu.pyro_images"}
EXPERIMENTS = "zuko_lu.experiments"
# The bridges to optional libraries: only they import those libraries, and the library
# never imports them (the experiment layer may, in a function).
BRIDGES = {"zuko_lu.sbi": {"sbi"}}
OPTIONAL = {"sbi", "lampe"}
# What `import zuko_lu` and these modules run must not import zuko (it turns off
# torch's distribution argument validation, on which Pyro relies).
ZUKO_FREE = (
    {PACKAGE, "zuko_lu.registry", "zuko_lu.convert", "zuko_lu.validation"} | CORE | PYRO_FACE
)


def modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    r"""Returns {module name: path} of every module of a package folder."""

    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def edges(name: str, path: Path, known: set[str]) -> list[tuple[str, int, str]]:
    r"""Returns the (target, line, kind) of each import of a module, `kind` being
    ``"module"`` (module level), ``"function"`` (inside a function or class) or ``"lazy"``
    (a ``_LAZY`` entry). A ``from X import a`` where ``X.a`` is a module of the package
    points at ``X.a``, else at ``X``."""

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    top = {id(node) for node in tree.body}
    found = []

    for node in ast.walk(tree):
        kind = "module" if id(node) in top else "function"
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, kind) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, node.lineno, kind))
        elif isinstance(node, ast.Assign) and id(node) in top:
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
                table = ast.literal_eval(node.value)
                root = name.split(".")[0]
                found += [(f"{root}.{m}", node.lineno, "lazy") for m in set(table.values())]

    return [edge for edge in found if edge[0] != "__future__"]


def graph(root: Path, package: str = PACKAGE) -> dict[str, list[tuple[str, int, str]]]:
    found = modules(root, package)
    return {name: edges(name, path, set(found)) for name, path in found.items()}


def within(target: str, names: set[str] | str) -> bool:
    names = {names} if isinstance(names, str) else names
    return any(target == n or target.startswith(n + ".") for n in names)


def cycles(g: dict[str, list[tuple[str, int, str]]]) -> list[list[str]]:
    r"""Returns the import cycles among the package's modules, over the import
    statements (module level and in functions; lazy ``_LAZY`` entries are names loaded
    on access, not imports, and do not count), one cycle per strongly connected
    component (Tarjan)."""

    succ = {
        m: sorted({t for t, _, kind in es if t in g and t != m and kind != "lazy"})
        for m, es in g.items()
    }
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return sorted(out)


def violations(g: dict[str, list[tuple[str, int, str]]]) -> list[str]:
    r"""Returns the forbidden edges of the layout's rules, one line each."""

    found = []
    for m, es in sorted(g.items()):
        library = not within(m, EXPERIMENTS) and m != f"{PACKAGE}.__main__"
        for target, line, kind in es:
            where = f"{m} (line {line}, {kind}) imports {target}"
            if library and within(target, EXPERIMENTS):
                found.append(f"{where}: the library never imports the experiment layer")
            if m in PYRO_FACE and (within(target, "zuko") or within(target, ZUKO_FACE)):
                found.append(f"{where}: the Pyro face imports neither zuko nor the zuko face")
            if m in CORE and (
                within(target, {"zuko", "pyro"}) or within(target, ZUKO_FACE | PYRO_FACE)
            ):
                found.append(f"{where}: the maths core depends on torch alone")
            if within(target, OPTIONAL) and not within(target, BRIDGES.get(m, set())):
                if library or kind != "function":
                    found.append(f"{where}: an optional library is imported by its bridge only")
            if within(target, set(BRIDGES)) and (library or kind != "function"):
                found.append(f"{where}: the library never imports a bridge")

    # what importing a zuko-free module runs (module-level edges, followed) never
    # reaches zuko, nor do the lazy names of the Pyro face (from_zuko, to_zuko)
    for m in sorted(ZUKO_FREE & set(g)):
        seen, todo = set(), [m]
        while todo:
            v = todo.pop()
            for target, line, kind in g.get(v, []):
                if kind == "function" or (kind == "lazy" and v not in PYRO_FACE):
                    continue
                if within(target, "zuko"):
                    found.append(f"import {m} imports zuko (via {v}, line {line})")
                elif target in g and target not in seen:
                    seen.add(target)
                    todo.append(target)
    return found


GRAPH = graph(ROOT)


def test_graph_is_read():
    # the reader sees every module and resolves relative and function-level imports
    assert {"zuko_lu", "zuko_lu.pyro", "zuko_lu.flows", "zuko_lu.experiments.cli"} <= set(GRAPH)
    flows = {t for t, _, _ in GRAPH["zuko_lu.flows"]}
    assert {"zuko_lu.transforms", "zuko_lu.parameters", "zuko.lazy"} <= flows
    convert = {(t, kind) for t, _, kind in GRAPH["zuko_lu.convert"]}
    assert ("zuko_lu.flows", "function") in convert and ("zuko_lu.pyro", "module") in convert
    lazy = {t for t, _, kind in GRAPH["zuko_lu"] if kind == "lazy"}
    assert lazy == {"zuko_lu.flows", "zuko_lu.hybrids", "zuko_lu.glow"}


def test_rules():
    found = violations(GRAPH)
    assert not found, "\n".join(found)


def test_no_cycles():
    found = cycles(GRAPH)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_checker_catches_what_it_should(tmp_path: Path):
    # a throwaway package breaking each rule once
    files = {
        "__init__.py": '_LAZY = {"A": "flows"}\n',
        "transforms.py": "import torch\n\ndef f():\n    import pyro\n",
        "flows.py": "import zuko\nfrom .transforms import f\n",
        "pyro.py": "def g():\n    from . import flows\n",
        "registry.py": "from .pyro import g\n",
        "pyro_images.py": '_LAZY = {"f": "hybrids"}\n',
        "hybrids.py": "from zuko.flows import MAF\n",
        "experiments/__init__.py": "",
        "experiments/runs.py": "from .plots import h\n",
        "experiments/plots.py": "def h():\n    from ..experiments import runs\n",
        "convert.py": "from .experiments.runs import x\nfrom .flows import y\n",
        "sbi.py": "def f():\n    import sbi\n    import lampe\n",
        "options.py": "def f():\n    from . import sbi\n",
        "experiments/bench.py": "def f():\n    import sbi\n    from .. import sbi\n",
    }
    for file, text in files.items():
        path = tmp_path / PACKAGE / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    g = graph(tmp_path)
    assert ("zuko_lu.flows", 1, "lazy") in g["zuko_lu"]
    assert cycles(g) == [["zuko_lu.experiments.plots", "zuko_lu.experiments.runs"]]

    found = "\n".join(violations(g))
    assert "zuko_lu.transforms (line 4, function) imports pyro" in found
    assert "zuko_lu.pyro (line 2, function) imports zuko_lu.flows" in found
    assert "zuko_lu.convert (line 1, module) imports zuko_lu.experiments.runs" in found
    assert "import zuko_lu.convert imports zuko (via zuko_lu.flows, line 1)" in found
    assert "import zuko_lu.registry" not in found  # pyro's import of flows is in a function
    assert "zuko_lu.pyro_images (line 1, lazy) imports zuko_lu.hybrids" in found
    assert "import zuko_lu.pyro_images imports zuko (via zuko_lu.hybrids, line 1)" in found
    assert "import zuko_lu imports zuko" not in found  # the package's lazy zuko face may
    assert "zuko_lu.sbi (line 3, function) imports lampe: an optional library" in found
    assert "zuko_lu.sbi (line 2, function) imports sbi" not in found
    assert "zuko_lu.options (line 2, function) imports zuko_lu.sbi: the library" in found
    assert "zuko_lu.experiments.bench" not in found  # in a function of the experiment layer
