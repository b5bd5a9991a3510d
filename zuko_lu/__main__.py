r"""``python -m zuko_lu``: the command line (see :mod:`zuko_lu.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
