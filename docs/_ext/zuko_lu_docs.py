r"""Sphinx helpers of the zuko-lu docs, all offline and generated from the code.

* ``.. argparse-cli:: module:function`` documents a command line from its
  :class:`argparse.ArgumentParser`: the usage of the command and of every subcommand, and
  every option as a Sphinx ``option`` (cross-referenceable, in ``objects.inv`` as
  ``std:cmdoption``), so that the page follows the parser.
* ``.. readme-section:: NAME`` includes a marked section of the README (Markdown).
* ``.. lazy-names::`` lists the names that :mod:`zuko_lu` loads lazily (its ``_LAZY``
  table), linked to where they are defined.
* The lazy names also resolve as ``zuko_lu.NAME`` (an alias of ``zuko_lu.MODULE.NAME``,
  in ``objects.inv`` too), as docstrings and users spell them.
* Every name in a module's ``__all__`` is documented, with or without a docstring.
* The build warns (an error under ``-W``) when the committed intersphinx inventories of
  ``docs/_inv`` no longer match the installed packages (see ``docs/inventories.py``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys

from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parents[1]


def escape(text: str) -> str:
    r"""Escapes reStructuredText inline markup in plain text."""

    return re.sub(r"([\\*`|_<>\[\]])", r"\\\1", text)


def load_parser(spec: str) -> argparse.ArgumentParser:
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)()


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    r"""Returns the (name, help, parser) of each subcommand, in the order they were added."""

    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    r"""Returns the (invocation, help) of each documented argument of a parser."""

    formatter = parser._get_formatter()
    out = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        invocation = formatter._format_action_invocation(action)
        text = action.help or ""
        if "%(" in text:
            text = text % {**vars(action), "prog": parser.prog}
        if action.choices is not None and not action.option_strings:
            text = f"{text} (one of {', '.join(map(str, action.choices))})".strip()
        out.append((invocation, text))
    return out


def cli_lines(parser: argparse.ArgumentParser, level: str = "-") -> list[str]:
    r"""Returns the reStructuredText of a command line and its subcommands."""

    lines = []

    def emit(prog: str, p: argparse.ArgumentParser, summary: str) -> None:
        title = f"``{prog}``"
        lines.extend([title, level * len(title), ""])
        lines.extend([f".. program:: {prog}", ""])
        description = summary or p.description
        if description:
            lines.extend([escape(description), ""])
        lines.extend([".. code-block:: text", ""])
        lines.extend(f"   {line}".rstrip() for line in p.format_help().splitlines())
        lines.append("")
        for invocation, text in options(p):
            lines.extend([f".. option:: {invocation}", ""])
            lines.extend([f"   {escape(text) or 'No description.'}", ""])

    emit(parser.prog, parser, "")
    for name, summary, sub in subcommands(parser):
        emit(f"{parser.prog} {name}", sub, summary)
    return lines


class ArgparseCLI(SphinxDirective):
    r"""``.. argparse-cli:: module:function`` documents the parser that the function returns."""

    required_arguments = 1
    option_spec = {"level": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        parser = load_parser(self.arguments[0])
        module = self.arguments[0].partition(":")[0]
        self.env.note_dependency(importlib.import_module(module).__file__)
        lines = cli_lines(parser, self.options.get("level", "-"))
        source = self.get_source_info()[0]
        self.state_machine.insert_input(StringList(lines, source=source), source)
        return []


class UndocumentedData(SphinxDirective):
    r"""``.. undocumented-data:: module`` documents the data of the module's ``__all__``
    that have no ``#:`` comment (autodoc skips those), so that every public name has an
    entry; it emits nothing when there is none."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from sphinx.pycode import ModuleAnalyzer

        name = self.arguments[0]
        module = importlib.import_module(name)
        documented = {attr for (_, attr) in ModuleAnalyzer.for_module(name).find_attr_docs()}
        lines = []
        for attr in getattr(module, "__all__", ()):
            value = getattr(module, attr)
            if callable(value) or inspect.ismodule(value) or attr in documented:
                continue
            lines += [f".. autodata:: {name}.{attr}", ""]
        source = self.get_source_info()[0]
        self.state_machine.insert_input(StringList(lines, source=source), source)
        return []


class ReadmeSection(SphinxDirective):
    r"""``.. readme-section:: NAME`` includes the part of the repository's README (Markdown)
    between the lines ``<!-- docs:NAME -->`` and ``<!-- /docs:NAME -->``, so that measured
    tables live in one place. Links to repository files become plain text and images are
    found next to the README. Without the markers it shows the directive's content (a
    note), so the page builds before the README holds the section; with only one of the
    two markers it warns."""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        readme = DOCS.parent / "README.md"
        self.env.note_dependency(str(readme))
        text = readme.read_text(encoding="utf-8") if readme.exists() else ""
        start, end = f"<!-- docs:{name} -->", f"<!-- /docs:{name} -->"
        if start in text and end in text:
            section = text.split(start, 1)[1].split(end, 1)[0]
            section = self.rewrite(section, readme.parent)
            folder = Path(self.env.doctreedir) / "readme"
            folder.mkdir(parents=True, exist_ok=True)
            snippet = folder / f"{name}.md"
            if not snippet.exists() or snippet.read_text(encoding="utf-8") != section:
                snippet.write_text(section, encoding="utf-8")
            # include paths are relative to the including page
            here = Path(self.env.doc2path(self.env.current_document.docname)).parent
            lines = [
                f".. include:: {os.path.relpath(snippet, here)}",
                "   :parser: myst_parser.sphinx_",
                "",
            ]
            source = self.get_source_info()[0]
            self.state_machine.insert_input(StringList(lines, source=source), source)
            return []
        if start in text or end in text:
            logger.warning(
                "README.md has only one of %s and %s", start, end, location=self.get_location()
            )
        node = nodes.container()
        self.state.nested_parse(self.content, self.content_offset, node)
        return node.children

    def rewrite(self, text: str, root: Path) -> str:
        srcdir = Path(self.env.srcdir)

        def image(match: re.Match) -> str:
            alt, target = match.group(1), match.group(2)
            if "://" in target or target.startswith("/"):
                return match.group(0)
            path = os.path.relpath(root / target, srcdir)
            return f"![{alt}](/{path})"

        def link(match: re.Match) -> str:
            label, target = match.group(1), match.group(2)
            if "://" in target or target.startswith(("#", "mailto:")):
                return match.group(0)
            return label if label.startswith("`") else f"{label} (`{target}`)"

        text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, text)
        return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", link, text)


def lazy_table() -> dict[str, str]:
    import zuko_lu

    return dict(zuko_lu._LAZY)


class LazyNames(SphinxDirective):
    r"""``.. lazy-names::`` is an autosummary table of :mod:`zuko_lu`'s lazy names."""

    def run(self) -> list[nodes.Node]:
        table = lazy_table()
        lines = [".. autosummary::", "   :nosignatures:", ""]
        # relative to the current module when it is zuko_lu, as autosummary asks
        prefix = "" if self.env.ref_context.get("py:module") == "zuko_lu" else "zuko_lu."
        lines += [f"   ~{prefix}{module}.{name}" for name, module in sorted(table.items())]
        source = self.get_source_info()[0]
        self.state_machine.insert_input(StringList(lines, source=source), source)
        return []


def register_aliases(app: Sphinx, doctree: nodes.document) -> None:
    r"""Registers ``zuko_lu.NAME`` as an alias of ``zuko_lu.MODULE.NAME`` on the page that
    documents the latter."""

    domain = app.env.domains["py"]
    docname = app.env.current_document.docname
    for name, module in lazy_table().items():
        target = domain.objects.get(f"zuko_lu.{module}.{name}")
        if target is not None and target.docname == docname:
            domain.note_object(f"zuko_lu.{name}", target.objtype, target.node_id, aliased=True)


def keep_public(app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any) -> Any:
    r"""Documents every name of a zuko_lu module's ``__all__``, even without a docstring."""

    if what != "module" or not skip:
        return None
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("zuko_lu") and name in getattr(module, "__all__", ()):
            if module.__dict__.get(name) is obj:
                return False
    return None


def drop_type_docstring(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    lines: list[str],
) -> None:
    r"""Drops the docstring that a datum inherits from its type (``tuple``'s, ...)."""

    if what in ("data", "attribute") and not inspect.isclass(obj):
        own = inspect.getdoc(type(obj))
        if own is not None and "\n".join(lines).strip() == own.strip():
            lines.clear()


def check_inventories(app: Sphinx) -> None:
    sys.path.insert(0, str(DOCS))
    try:
        import inventories
    finally:
        sys.path.remove(str(DOCS))

    for project in inventories.stale():
        logger.warning(
            "the intersphinx inventory docs/_inv/%s.inv is stale: run python docs/inventories.py",
            project,
        )


def setup(app: Sphinx) -> dict:
    app.add_directive("argparse-cli", ArgparseCLI)
    app.add_directive("lazy-names", LazyNames)
    app.add_directive("undocumented-data", UndocumentedData)
    app.add_directive("readme-section", ReadmeSection)
    app.connect("doctree-read", register_aliases)
    app.connect("autodoc-skip-member", keep_public)
    app.connect("autodoc-process-docstring", drop_type_docstring)
    app.connect("builder-inited", check_inventories)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
