r"""Pytest collection in docs/: the pages (*.rst) are doctests, the Python files are not."""

from pathlib import Path

import pytest

collect_ignore = ["conf.py", "inventories.py", "measure.py", "figures.py"]
collect_ignore_glob = ["_build/*", "_ext/*", "_inv/*", "_static/*"]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the pages write files (figures, runs) into the working directory
    monkeypatch.chdir(tmp_path)
