# SPDX-License-Identifier: GPL-3.0-or-later
"""The daemon verbs of the command line against a real daemon: output, --json, exit codes, escaping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from overlord.cli import cli
from tests.support.daemon import DaemonProcess, child_env, overlord_cmd

NASTY = ["[bold]x", "[/]", "[link=x]y", "a lone [ here", ":smile: \x1b[2J"]
SHOWN = ["[bold]x", "[/]", "[link=x]y", "a lone [ here", ":smile: \\x1b[2J"]


def run(d: DaemonProcess, *args: str, tmp_home: Path | None = None) -> tuple[int, str, str]:
    env = {"OVERLORD_STATE_DIR": str(d.state_dir), "COLUMNS": "200"}
    if tmp_home is not None:
        env["OVERLORD_WARNINGS_FILE"] = str(tmp_home / "warnings.json")
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_changes_and_tasks_print_stored_text_verbatim(daemon: DaemonProcess) -> None:
    cid = daemon.new_change(NASTY[0], *({"kind": "quick", "summary": s} for s in NASTY),
                            {"kind": "fail", "summary": NASTY[1], "error": NASTY[2]}, kind="[/]kind")
    daemon.wait_change(cid, lambda c: c["ready"])
    code, out, err = run(daemon, "changes")
    assert code == 0, err
    assert "[bold]x" in out and "Error" in out
    code, out, err = run(daemon, "tasks", cid)
    assert code == 0, err
    for text in SHOWN:
        assert text in out  # in the table and in the log lines
    assert f"ran {SHOWN[-1]}" in out and "- [/] ([link=x]y)" in out and "\x1b" not in out
    code, out2, _ = run(daemon, "change", cid)
    assert out2 == out


def test_json_is_the_api_result(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Json", {"kind": "quick", "summary": "one"}, **{"snap-names": ["foo"]})
    daemon.wait_change(cid, lambda c: c["ready"])
    with daemon.client() as c:
        api = c.change(cid)
        api_all = c.changes(select="all")
    assert json.loads(run(daemon, "tasks", cid, "--json")[1]) == api
    assert json.loads(run(daemon, "changes", "--json")[1]) == api_all
    assert json.loads(run(daemon, "changes", "foo", "--json")[1]) == api_all
    assert json.loads(run(daemon, "changes", "bar", "--json")[1]) == []
    assert json.loads(run(daemon, "warnings", "--json")[1]) == []


def test_errors_are_one_line_with_documented_exit_codes(daemon: DaemonProcess) -> None:
    code, out, err = run(daemon, "tasks", "42")
    assert (code, out, err) == (1, "", "error: cannot find change with id '42'\n")
    code, _, err = run(daemon, "changes", "nosuchsnap")
    assert (code, err) == (1, "error: no changes for snap 'nosuchsnap' found\n")
    code, _, err = run(daemon, "tasks")
    assert code == 2 and "Missing argument 'ID'" in err
    cid = daemon.new_change("Quick", {"kind": "quick", "summary": "x"})
    daemon.wait_change(cid, lambda c: c["ready"])
    code, _, err = run(daemon, "abort", cid)
    assert (code, err) == (1, f"error: cannot abort change {cid} with nothing pending\n")


def test_abort_and_watch_an_aborted_change(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Abort me", {"kind": "gated", "summary": "Wait", "total": 4})
    daemon.wait_change(cid, lambda c: c["tasks"][0]["status"] == "Doing")
    assert run(daemon, "abort", cid) == (0, "", "")
    code, out, err = run(daemon, "watch", cid)
    assert code == 1 and "Undone" in out and err == f"error: change {cid} ended in status Undone\n"


def test_watch_follows_to_done(daemon: DaemonProcess) -> None:
    cid = daemon.new_change("Watch me", {"kind": "quick", "summary": "Prep"},
                            {"kind": "gated", "summary": "Fetch", "total": 4})
    daemon.wait_change(cid, lambda c: c["tasks"][1]["status"] == "Doing")
    daemon.open_gate()
    code, out, err = run(daemon, "watch", cid)
    assert code == 0, err
    assert f"Change {cid} (test): Watch me - Done" in out and "4/4 steps" in out


def test_warnings_then_okay(daemon: DaemonProcess, tmp_path: Path) -> None:
    code, _, err = run(daemon, "okay", tmp_home=tmp_path)
    assert code == 1 and "you must have looked at them first" in err
    assert run(daemon, "warnings", tmp_home=tmp_path)[1] == "No warnings.\n"
    daemon.new_change("Warn", warnings=["mind the [/] gap"])
    code, out, err = run(daemon, "changes", tmp_home=tmp_path)
    assert err == "WARNING: There is 1 new warning. See 'overlord warnings'.\n"
    code, out, err = run(daemon, "warnings", tmp_home=tmp_path)
    assert code == 0 and "mind the [/] gap" in out and err == ""
    assert run(daemon, "changes", tmp_home=tmp_path)[2] == ""  # seen: no more notes
    assert run(daemon, "okay", tmp_home=tmp_path) == (0, "", "")
    assert run(daemon, "warnings", tmp_home=tmp_path)[1] == "No further warnings.\n"


def test_no_daemon_is_said_in_one_line(tmp_path: Path) -> None:
    import subprocess

    for args in (["changes"], ["tasks", "1"], ["watch", "1"], ["abort", "1"], ["warnings"], ["okay"]):
        p = subprocess.run(overlord_cmd(*args, "--state-dir", str(tmp_path)), capture_output=True, text=True,
                           env=child_env(OVERLORD_WARNINGS_FILE=str(tmp_path / "w.json")), timeout=60)
        assert p.returncode == 1, (args, p.stderr)
        assert p.stdout == ""
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: cannot ")
        if args != ["okay"]:
            assert f"cannot reach the overlord daemon at {tmp_path}/overlord.socket: there is no socket" in p.stderr


def test_state_dir_comes_from_the_environment(daemon: DaemonProcess) -> None:
    import subprocess

    p = subprocess.run(overlord_cmd("changes"), capture_output=True, text=True, timeout=60,
                       env=child_env(OVERLORD_STATE_DIR=str(daemon.state_dir)))
    assert (p.returncode, p.stdout, p.stderr) == (0, "No changes found.\n", "")


@pytest.mark.parametrize("arg", ["./state.db", "dir/state.db", "state.db"])
def test_a_path_argument_reads_the_database_file(tmp_path: Path, arg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import State, Status

    monkeypatch.chdir(tmp_path)
    db = tmp_path / arg
    db.parent.mkdir(parents=True, exist_ok=True)
    st = State.open(db)
    with st:
        chg = st.new_change("install", "Install [bold]x")
        chg.add_task(st.new_task("fetch", "Fetch x"))
    st.close()
    result = CliRunner().invoke(cli, ["changes", arg, "--json"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.stderr
    [info] = json.loads(result.stdout)
    assert info["summary"] == "Install [bold]x" and [t["kind"] for t in info["tasks"]] == ["fetch"]
    result = CliRunner().invoke(cli, ["change", "1", arg, "--json"], env={"COLUMNS": "120"})
    one = json.loads(result.stdout)
    # One change also says why each task is not running, as GET /v2/changes/{id} does.
    assert result.exit_code == 0 and [t.pop("why")["reason"] for t in one["tasks"]] == ["runnable"] and one == info
    # Without --json, the engine's own viewers (plain text here: they are being taught to escape markup).
    st = State.open(db)
    with st:
        done = st.new_change("remove", "Remove y")
        t = st.new_task("unlink", "Unlink y")
        done.add_task(t)
        t.set_status(Status.DONE)
    st.close()
    result = CliRunner().invoke(cli, ["change", "2", arg], env={"COLUMNS": "120"})
    assert result.exit_code == 0 and "Unlink y" in result.stdout
