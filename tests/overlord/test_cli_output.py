# SPDX-License-Identifier: GPL-3.0-or-later
"""What the overlord command prints: stored text verbatim, every status, failures on one line.

Summaries, kinds and log lines come from users and file names, so they may
hold what rich would read as markup ("[bold]", "[/]", "[link=x]", a lone
"["): every command shows them as they are. Every status renders, styled
or not. A command that fails exits non-zero with one line on stderr.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import State, Status
from tests.support.helpers import run_overlord

HOSTILE = ["[bold]x", "[/]", "[link=x]y", "a [ b", "[red]red[/red]", "[bold red on white]", "\\[escaped]"]
STATUSES = [s for s in Status if s is not Status.DEFAULT]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """db holds one change per status, and one change whose every text is hostile."""
    path = tmp_path_factory.mktemp("cli") / "state.db"
    st = State.open(path)
    try:
        with st:
            for status in STATUSES:
                chg = st.new_change(f"in-{status.value.lower()}", f"a task in {status.value}")
                t = st.new_task("step", f"step in {status.value}")
                chg.add_task(t)
                if status is Status.WAIT:
                    t.set_to_wait(Status.DONE)
                elif status is not Status.DO:
                    t.set_status(status)
            chg = st.new_change(HOSTILE[0], HOSTILE[1])
            for text in HOSTILE:
                t = st.new_task(text, text)
                t.logf("%s", text)
                chg.add_task(t)
    finally:
        st.close()
    return path


def test_changes_shows_every_status_and_stored_text_verbatim(db: Path) -> None:
    proc = run_overlord("changes", str(db))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for status in STATUSES:
        assert f"in-{status.value.lower()}" in proc.stdout
        assert f"a task in {status.value}" in proc.stdout
    lines = proc.stdout.splitlines()
    for status in STATUSES:
        (row,) = [line for line in lines if f"in-{status.value.lower()} " in line]
        assert f" {status.value} " in row, row
    (row,) = [line for line in lines if HOSTILE[0] in line]
    assert HOSTILE[1] in row, row


@pytest.mark.parametrize("status", STATUSES, ids=[s.value for s in STATUSES])
def test_change_renders_every_status(db: Path, status: Status) -> None:
    cid = str(STATUSES.index(status) + 1)
    proc = run_overlord("change", cid, str(db))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    title = proc.stdout.splitlines()[0]
    assert title.startswith(f"change {cid} (in-{status.value.lower()}): a task in {status.value} — "), title
    assert title.rstrip().endswith(status.value), title
    (row,) = [line for line in proc.stdout.splitlines() if f"step in {status.value}" in line]
    assert f" {status.value} " in row, row


def test_change_shows_stored_text_verbatim(db: Path) -> None:
    cid = str(len(STATUSES) + 1)
    proc = run_overlord("change", cid, str(db))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"change {cid} ({HOSTILE[0]}): {HOSTILE[1]} — "), lines[0]
    for text in HOSTILE:
        (row,) = [line for line in lines if f"INFO {text}" in line]
        assert row.count(text) == 3, f"kind, summary and log line of {text!r} not shown as they are: {row!r}"


@pytest.mark.parametrize("args, words", [
    (("change", "999"), "there is no such change"),
    (("change", "1", "missing.db"), "no such file"),
    (("changes", "missing.db"), "no such file"),
    (("changes", "."), "it is a directory"),
], ids=["no-such-change", "change-of-missing-db", "changes-of-missing-db", "changes-of-directory"])
def test_a_failing_command_exits_non_zero_with_one_line(db: Path, tmp_path: Path, args: tuple[str, ...],
                                                        words: str) -> None:
    argv = [a if a != "missing.db" else str(tmp_path / a) for a in args]
    if len(argv) == 2 and argv[0] == "change":
        argv.append(str(db))
    if argv[-1] == ".":
        argv[-1] = str(tmp_path)
    proc = run_overlord(*argv)
    assert proc.returncode == 1, proc
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: cannot ") and words in line, line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [("change", "abc"), ("nosuch",), ("changes", "a", "b")],
                         ids=["bad-id", "no-such-command", "extra-argument"])
def test_a_usage_error_is_one_line_and_exit_code_2(args: tuple[str, ...]) -> None:
    proc = run_overlord(*args)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and "--help" in line, line
