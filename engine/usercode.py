# SPDX-License-Identifier: GPL-3.0-or-later
"""How the engine names user code and what it raises, in log lines and task logs, without ever raising."""

from __future__ import annotations

import traceback


def error_message(exc: BaseException) -> str:
    """error_message is what the task log says of a handler's exception.

    It never raises: an exception whose str() raises (anything, SystemExit
    included) is named by its type.
    """
    try:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    except BaseException as e:
        text = f"<its message cannot be shown: str() raised {type(e).__name__}>"
    if not isinstance(exc, Exception):
        return f"handler raised {type(exc).__name__}{': ' + text if text else ''}"
    return text or type(exc).__name__


def exception_text(exc: BaseException) -> str:
    """exception_text names an exception raised by user code, "Type: message", without ever raising."""
    try:
        text = str(exc)
    except BaseException as e:
        text = f"<its message cannot be shown: str() raised {type(e).__name__}>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def traceback_text(exc: BaseException) -> str:
    """traceback_text formats exc with its traceback for the log, without ever raising."""
    try:
        return "".join(traceback.format_exception(exc)).rstrip()
    except BaseException:
        return exception_text(exc)


def callable_name(fn: object) -> str:
    """callable_name names a user's function in a log line: its qualified name, not its repr."""
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        name = type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) and module != "builtins" else name
