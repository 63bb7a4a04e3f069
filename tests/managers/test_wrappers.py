# SPDX-License-Identifier: GPL-3.0-or-later
"""Command wrappers: the real shell script the backend writes, run with hostile arguments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from managers.snap import SnapInfo
from managers.snapstate.backend import Backend

#: PROG prints each of its arguments on a line of its own, between brackets.
PROG = '#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n'


def _linked(root: Path, command: str, *, from_state: bool = False) -> tuple[Backend, Path]:
    """_linked links revision 1 of snap hello whose app runs command, with bin/prog in it."""
    b = Backend(root)
    b.setup_root()
    prog = b.revision_dir("hello", "1") / "bin" / "prog"
    prog.parent.mkdir(parents=True)
    prog.write_text(PROG)
    prog.chmod(0o755)
    if from_state:  # what an older install recorded: read back without the checks a new snap.yaml gets
        info = SnapInfo.from_dict({"name": "hello", "version": "1.0", "summary": "Hi", "revision": "1",
                                   "apps": {"hello": {"command": command}}})
    else:
        info = SnapInfo.from_yaml(f"name: hello\nversion: '1.0'\nsummary: Hi\napps:\n  hello:\n"
                                  f"    command: '{command}'\n").with_side(revision="1")
    b.link(info)
    return b, b.bin_dir() / "hello"


def _run(wrapper: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    return subprocess.run([str(wrapper), *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env)


HOSTILE = ["; touch pwned", "`touch pwned`", "$(touch pwned)", "$HOME", "*", "a b", "#x", "'\"", "\n"]


def test_the_callers_arguments_are_passed_as_they_are(tmp_path: Path) -> None:
    b, wrapper = _linked(tmp_path / "root", "bin/prog $SNAP_DATA/conf a#b #c $SNAP_NAME:$SNAP_REVISION")
    got = _run(wrapper, *HOSTILE, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    fixed = [f"{b.data_dir('hello', '1')}/conf", "a#b", "#c", "hello:1"]
    assert got.stdout == "".join(f"[{a}]\n" for a in fixed + HOSTILE)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("command", ["$1", "bin/prog $1", "bin/prog $HOME", "bin/prog #$1", "bin/prog $1#"])
def test_a_recorded_command_naming_other_variables_cannot_run_a_callers_program(tmp_path: Path,
                                                                                 command: str) -> None:
    """A command recorded before the install-time check (read back from state) is still quoted word by word."""
    _, wrapper = _linked(tmp_path / "root", command, from_state=True)
    evil = tmp_path / "evil"
    evil.write_text(f"#!/bin/sh\ntouch {tmp_path / 'ran'}\n")
    evil.chmod(0o755)
    up = "../" * len(wrapper.parts) + str(evil).lstrip("/")  # from $SNAP up to / and down to evil
    got = _run(wrapper, up, "; id", cwd=tmp_path)
    assert not (tmp_path / "ran").exists(), "the caller chose the program"
    if command != "$1":
        assert got.returncode == 0, got.stderr
        assert got.stdout.splitlines()[-2:] == [f"[{up}]", "[; id]"]
        # The literal word, or the snap's own value ($HOME: the snap's, under the root; never the caller's).
        word, first = command.split()[1], got.stdout.splitlines()[0]
        assert first == f"[{word}]" or (word == "$HOME" and first.startswith(f"[{tmp_path / 'root'}/")), first
