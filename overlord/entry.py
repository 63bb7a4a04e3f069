# SPDX-License-Identifier: GPL-3.0-or-later
"""The `overlord` command's entry point: it names the extra to install when a part is missing.

`pip install overlord-engine` installs the engine alone (SQLAlchemy, Alembic,
tenacity). The command's verbs need the `[cli]` extra, the daemon the
`[daemon]` extra, the snap system the `[system]` extra and PostgreSQL the
`[postgresql]` extra; a verb run without its extra says which one, in one
line, instead of a traceback.
"""

from __future__ import annotations

import sys

from overlord.extras import EXTRAS, missing_extra

__all__ = ["EXTRAS", "main", "missing_extra"]


def main() -> None:
    """main runs the overlord command, or says in one line which extra it needs."""
    try:
        from overlord.cli import main as run

        run()
    except ModuleNotFoundError as e:
        extra = missing_extra(e)
        if extra is None:
            raise
        print(f"error: cannot run this command without the [{extra}] extra: "
              f"pip install 'overlord-engine[{extra}]' ({e.name} is missing)", file=sys.stderr)
        sys.exit(1)
