# SPDX-License-Identifier: GPL-3.0-or-later
"""Which extra installs a missing module: what the entry point (overlord.entry) and the command's last resort
(overlord.cli.main) both ask of a ModuleNotFoundError, in a module that imports nothing of the project."""

from __future__ import annotations

#: EXTRAS maps the top-level module a part needs to the extra that installs it.
EXTRAS = {
    "click": "cli",
    "rich": "cli",
    "httpx": "cli",
    "starlette": "daemon",
    "uvicorn": "daemon",
    "multipart": "daemon",
    "python_multipart": "daemon",
    "yaml": "system",
    "cryptography": "system",
    "psycopg": "postgresql",
}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """missing_extra names the extra whose absence made the import fail, or None for any other module."""
    name = (error.name or "").split(".")[0]
    return EXTRAS.get(name)
