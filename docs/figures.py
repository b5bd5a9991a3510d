r"""Regenerates the figures of the tutorials, by running the tutorials themselves.

Each page listed below saves its figures into the working directory; this script runs
the page's code (as the test suite does: seed 0, one thread) inside ``docs/_static``,
so that the pictures on the pages are exactly what the code on the pages draws.

Usage (from the repository root)::

    python docs/figures.py
"""

from __future__ import annotations

import doctest
import os
import sys

from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PAGES = ["tutorials/quickstart.rst", "tutorials/sbi.rst"]


def main() -> int:
    torch.set_num_threads(1)
    static = HERE / "_static"
    static.mkdir(exist_ok=True)
    failed = 0
    for page in PAGES:
        cwd = os.getcwd()
        os.chdir(static)
        try:
            torch.manual_seed(0)
            result = doctest.testfile(
                str(HERE / page), module_relative=False, globs={"torch": torch}
            )
        finally:
            os.chdir(cwd)
        failed += result.failed
        print(f"{page}: {result.attempted} examples, {result.failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
