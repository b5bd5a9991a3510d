r"""``python -m zuko_lu``: the command line (see :mod:`zuko_lu.experiments.cli`)."""

from __future__ import annotations

from .experiments.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
