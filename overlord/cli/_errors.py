# SPDX-License-Identifier: GPL-3.0-or-later
"""How commands fail: one line on stderr, exit status 1 (click's usage errors exit 2)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    """fail prints an error on one line and exits 1."""
    from ._output import one_line

    click.echo(f"error: {one_line(' '.join(str(message).split()))}", err=True)
    sys.exit(1)


def one_line_errors(fn: F) -> F:
    """one_line_errors turns the engine's and the managers' errors (and OSErrors) into fail()."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        from engine import EngineError  # here: commands that talk to the daemon never load the engine

        try:
            return fn(*args, **kw)
        except (EngineError, OSError) as e:
            fail(str(e))
    return wrapper  # type: ignore[return-value]
