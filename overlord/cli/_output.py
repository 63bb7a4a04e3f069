# SPDX-License-Identifier: GPL-3.0-or-later
"""What every command prints through: the console, safe text, tables, times, errors and exit codes.

Stored text (summaries, kinds, log lines, errors, warnings) is never read as
rich markup: it goes into Text objects, the console has markup and emoji off,
and control characters are shown escaped, so ``[bold]``, ``[/]`` or an escape
sequence in a summary prints as itself. one_line is the one sanitiser of such
text (plain and echo_lines use it): on one line, a newline shown as ``\n``;
safe is the same for the few texts whose lines are meant (an error of
several lines, an assertion).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn

import click
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

#: Exit statuses of every command (docs/daemon.md): success, failure, bad usage, a conflicting
#: change (retry later, like snapd's), and a watch interrupted by Ctrl-C.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 10
EXIT_INTERRUPTED = 130

STATUS_STYLES = {
    "Done": "green", "Error": "bold red", "Undone": "yellow", "Hold": "magenta", "Abort": "red",
    "Doing": "cyan", "Undoing": "cyan", "Undo": "yellow", "Wait": "blue", "Do": "", "Default": "",
}

#: What a terminal could act on, or what hides or reorders text: C0 and C1 controls (ESC, CSI, BEL, CR...), DEL,
#: the line and paragraph separators, and the bidirectional overrides and isolates (text shown reversed).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: _CONTROL, and tab and newline: what one_line escapes.
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: MAX_SHOWN is the most characters of one stored text that one_line shows (a summary of megabytes, written
#: into the database by hand, took minutes to fold into a table).
MAX_SHOWN = 2000
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class CliError(click.ClickException):
    """CliError ends a command with one line on stderr, "error: <message>", and its exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(" ".join(message.split()) if "\n" not in message.strip() else message.strip())
        setattr(self, "exit_code", exit_code)  # noqa: B010 (click declares it a class variable)

    def show(self, file: Any = None) -> None:
        """show prints the error to stderr."""
        click.echo(f"error: {safe(self.message)}", err=True)


def fail(message: str, exit_code: int = EXIT_ERROR) -> NoReturn:
    """fail ends the command with an error."""
    raise CliError(message, exit_code)


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def one_line(text: object) -> str:
    """one_line is stored text (a summary, an error, a kind, a log line) safe to print on one line: control
    characters (escape sequences, carriage returns, newlines, tabs) shown as \\xNN, \\n, \\r, \\t; past
    MAX_SHOWN characters, its start and its length (a table folds every character it is given)."""
    text = str(text)
    if len(text) > MAX_SHOWN:
        text = f"{text[:MAX_SHOWN]}... ({len(text)} characters)"
    return _CONTROL_LINE.sub(_escape, text)


def safe(text: object) -> str:
    """safe is one_line for a text whose lines are meant: its newlines (and tabs) are kept."""
    return _CONTROL.sub(_escape, str(text))


def plain(text: object, style: str = "") -> Text:
    """plain is stored text as a rich Text on one line: never markup, control characters escaped (one_line)."""
    return Text(one_line(text), style=style)


def status_text(status: str) -> Text:
    """status_text is a status, styled when it has a style."""
    return plain(status, STATUS_STYLES.get(status, ""))


def console(stderr: bool = False) -> Console:
    """console returns a rich Console that never interprets markup or emoji in what it prints.

    Its width is the terminal's, else $COLUMNS, else 80.
    """
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


def table(*columns: str, wrap: Sequence[str] = ()) -> Table:
    """table makes a borderless table like snapd's; columns in wrap fold, the others stay whole."""
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    for name in columns:
        if name in wrap:
            t.add_column(name, overflow="fold", ratio=1)
        else:
            t.add_column(name, no_wrap=True)
    return t


class FitTable:
    """FitTable is a table that fits the width it is printed at: the flex column folds, never below
    min_flex cells, and when even that does not fit, the droppable columns go, in order.
    """

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Text]], flex: str,
                 drop: Sequence[str] = (), min_flex: int = 20) -> None:
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self.flex = flex
        self.drop = list(drop)
        self.min_flex = min_flex

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        widths = {c: max([len(c)] + [row[i].cell_len for row in self.rows]) for i, c in enumerate(self.columns)}
        keep = list(self.columns)
        want_flex = min(self.min_flex, widths[self.flex])

        def fixed() -> int:
            return sum(widths[c] for c in keep if c != self.flex) + 2 * (len(keep) - 1)

        for name in self.drop:
            if width - fixed() >= want_flex:
                break
            keep.remove(name)
        t = table(*keep, wrap=(self.flex,))
        t.columns[keep.index(self.flex)].min_width = want_flex
        index = [self.columns.index(c) for c in keep]
        for row in self.rows:
            t.add_row(*(row[i] for i in index))
        yield t


def amount(done: int, total: int, label: str = "") -> str:
    """amount tells a task's progress: "3/5" for a few steps, a percentage for bytes and such."""
    if total <= 1:
        text = "100%" if done >= total else ""
    elif total <= 100:
        text = f"{done}/{total}"
    else:
        text = f"{100 * done // total}%"
    return f"{text} {label}".strip()


def print_json(value: Any) -> None:
    """print_json prints value as indented JSON for scripts; what a terminal could act on (JSON escapes the C0
    controls already; DEL, the C1 controls, the bidirectional overrides) is escaped too, \\uNNNN, as JSON
    allows: only strings hold such characters, so the JSON means the same."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    click.echo(_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def parse_time(text: str | None) -> datetime | None:
    """parse_time reads an API time (None stays None)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # a time edited by hand in the database: shown as it is
        return None


def when(text: str | None, now: datetime | None = None, abs_time: bool = False) -> str:
    """when shows an API time as snapd does: "today at 15:04 UTC", "yesterday at ...", or the date.

    abs_time shows RFC 3339 instead; a missing time is "-".
    """
    t = parse_time(text)
    if t is None:
        return one_line(text) if text else "-"  # a time edited by hand in the database: as it is
    if abs_time:
        return f"{t:%Y-%m-%dT%H:%M:%SZ}" if t.utcoffset() == timedelta(0) else t.isoformat(timespec="seconds")
    local = t.astimezone()
    today = (now or datetime.now(local.tzinfo)).astimezone(local.tzinfo).date()
    zone = local.tzname() or ""
    if local.date() == today:
        return f"today at {local:%H:%M} {zone}".rstrip()
    if local.date() == today - timedelta(days=1):
        return f"yesterday at {local:%H:%M} {zone}".rstrip()
    if local.date() == today + timedelta(days=1):
        return f"tomorrow at {local:%H:%M} {zone}".rstrip()
    return f"{local:%Y-%m-%d}"


def echo_lines(lines: Iterable[str], err: bool = False) -> None:
    """echo_lines prints stored text lines, each on one line, escaped."""
    for line in lines:
        click.echo(one_line(line), err=err)


def out() -> Console:
    """out is the console of standard output."""
    return console()


def is_tty() -> bool:
    """is_tty says whether standard output is a terminal."""
    return sys.stdout.isatty()
