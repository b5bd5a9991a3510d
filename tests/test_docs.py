r"""The documentation: it builds warning-free, and its API reference is complete.

Builds the Sphinx site once (``sphinx-build -W``, offline) and checks, against the
built ``objects.inv`` and HTML, that every public name of the package has an entry with
its docstring rendered, and that the command-line reference lists every subcommand and
option of the parser. The tutorials themselves run as doctests of ``docs/**/*.rst``.
"""

from __future__ import annotations

import argparse
import html
import importlib
import pkgutil
import re
import subprocess
import sys

from pathlib import Path

import pytest

from sphinx.util.inventory import InventoryFile

import zuko_lu

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Every module of the package: each name of its __all__ must be in the API reference.
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(zuko_lu.__path__, "zuko_lu.")
    if m.name != "zuko_lu.__main__"
)

PAGES = [
    "index",
    "maths",
    "tutorials/quickstart",
    "tutorials/zuko",
    "tutorials/pyro",
    "tutorials/plugin",
    "tutorials/paper",
    "api/cli",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    result = subprocess.run(
        [*command, str(DOCS), str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture(scope="module")
def inventory(site: Path) -> dict[str, dict[str, str]]:
    r"""Returns {role: {name: uri}} of the built objects.inv."""

    with open(site / "objects.inv", "rb") as f:
        data = InventoryFile.load(f, "", lambda base, uri: uri)

    def uri(item: object) -> str:
        return item.uri if hasattr(item, "uri") else item[2]

    return {
        role: {name: uri(item) for name, item in items.items()} for role, items in data.items()
    }


def python_objects(inventory: dict) -> dict[str, str]:
    return {
        name: uri
        for role, items in inventory.items()
        if role.startswith("py:")
        for name, uri in items.items()
    }


def text_of(site: Path, page: str) -> str:
    body = (site / page).read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def test_build_and_pages(site: Path, inventory: dict) -> None:
    documents = inventory.get("std:doc", {})
    for page in PAGES:
        assert page in documents, f"page {page} is missing from the site"


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names(module_name: str, site: Path, inventory: dict) -> None:
    module = importlib.import_module(module_name)
    objects = python_objects(inventory)
    assert module_name in inventory["py:module"], f"module {module_name} is not documented"

    missing = [name for name in module.__all__ if f"{module_name}.{name}" not in objects]
    assert not missing, f"not in the API reference: {', '.join(missing)} (of {module_name})"

    for name in module.__all__:
        uri = objects[f"{module_name}.{name}"]
        page, _, anchor = uri.partition("#")
        assert f'id="{anchor}"' in (site / page).read_text(encoding="utf-8"), uri


def test_package_names(inventory: dict) -> None:
    import zuko_lu

    objects = python_objects(inventory)
    for name in zuko_lu.__all__:
        defined = f"zuko_lu.{zuko_lu._LAZY[name]}.{name}"
        assert defined in objects, f"{defined} is not in the API reference"
        # zuko_lu.NAME resolves too (an alias of where it is defined)
        assert objects.get(f"zuko_lu.{name}") == objects[defined], f"zuko_lu.{name}"


def test_docstrings_rendered(site: Path) -> None:
    # napoleon turns "Arguments:" into a "Parameters" field list and "Example:" and
    # "References:" into rubrics; left as they are, the sections would show verbatim
    pages = sorted((site / "api").glob("*.html"))
    assert pages
    for page in pages:
        text = text_of(site, f"api/{page.name}")
        for section in ("Arguments:", "Example:", "References:"):
            assert section not in text, f"unrendered {section!r} in {page.name}"

    text = text_of(site, "api/flows.html")
    assert "Parameters:" in text and "Example" in text and ">>>" in text
    assert "\\(" in text or "\\[" in text  # maths for MathJax


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_cli_reference(site: Path, inventory: dict) -> None:
    from zuko_lu.experiments.cli import parser

    root = parser()
    commands = subcommands(root)
    assert {"train", "evaluate", "sample", "compare"} <= set(commands)

    text = text_of(site, "api/cli.html")
    options = inventory.get("std:cmdoption", {})
    for prog, p in {
        root.prog: root,
        **{f"{root.prog} {k}": v for k, v in commands.items()},
    }.items():
        assert prog in text, f"no section for {prog}"
        program = prog.replace(" ", "-")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            strings = action.option_strings or [action.dest]
            for string in strings:
                assert string in text, f"{prog} {string} is not on the CLI page"
                assert f"{program}.{string}" in options, f"{prog} {string} has no entry"
