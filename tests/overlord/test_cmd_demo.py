# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord demo: it seeds, installs, connects, refreshes, fails a refresh that is undone, shows connections and
changes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from overlord.cli._demo import MARKER, prepare
from tests.support.daemon import invoke, run


@pytest.mark.heavy
def test_demo(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    result = invoke("demo", "--dir", str(base))
    assert result.exit_code == 0, result.output
    out = result.output
    for line in ("1. Keys", "2. The store", "3. Seed the system", "reader 1.0 (revision 1)", "4. Install hello",
                 "Hello from hello 1.0 (revision 1)", "5. Connect reader:logs", "mount (ro): ",
                 "6. acme publishes hello 2.0", "Hello from hello 2.0 (revision 2)", "7. acme publishes hello 3.0",
                 "chg.err(): cannot perform the following tasks:", "8. The connections",
                 "9. acme pushes hello 4.0 to the beta channel", "10. Auto-refresh",
                 "Hello from hello 4.0 (revision 4)",
                 "11. Drift", "warning: snap 'hello' drifted from its state: its current link", "12. The changes"):
        assert line in out, line
    after_failure = out.split("7. acme publishes hello 3.0")[1]
    assert "Hello from hello 2.0 (revision 2)" in after_failure
    # The greeter service runs as a process, revision 1's after the install, 2's again after the failed refresh.
    installed = out.split("4. Install hello")[1].split("5. Connect")[0]
    assert "hello.greeter  enabled  active" in installed
    assert "hello.greeter: greeter of hello 1.0 (revision 1) serving" in installed
    # A configuration value that the service reads: the configure hook writes it and restarts the greeter.
    configured = installed.split("overlord set hello greeting=Bonjour")[1]
    assert "hello.greeter: Bonjour from the greeter of hello 1.0 (revision 1)" in configured
    assert "hello.greeter: greeter of hello 2.0 (revision 2) serving" in after_failure.split("8. The connections")[0]
    assert "Undone" in after_failure
    connections = out.split("8. The connections")[1].split("9. acme pushes")[0]
    assert [line.split()[:3] for line in connections.splitlines()[1:] if line.strip()] == [
        ["Interface", "Plug", "Slot"], ["content[books]", "reader:books", "library:books"],
        ["network", "hello:network", ":network"], ["network", "reader:network", ":network"],
        ["system-files", "reader:logs", ":system-files"]]
    assert os.readlink(base / "root/snap/hello/current") == "4"  # auto-refreshed from beta, then repaired
    con = sqlite3.connect(base / "state/state.db")
    try:
        assert con.execute("SELECT kind, status FROM changes ORDER BY id").fetchall() == [
            ("seed", "Done"), ("install", "Done"), ("configure-snap", "Done"), ("connect", "Done"),
            ("refresh", "Done"), ("refresh", "Error"),
            ("switch-snap-channel", "Done"), ("auto-refresh", "Done"), ("repair", "Done")]
        assert con.execute("SELECT value FROM state_data WHERE key = 'seeded'").fetchone()[0] == "true"
        assert con.execute("SELECT count(*) FROM assertions").fetchone()[0] == 11
    finally:
        con.close()
    # Its services stopped with it, and the next demo in the same directory starts over: everything the
    # first one made goes but the marker (a second whole run, 10 to 40 s, would only repeat the first).
    assert _processes_of(base) == []
    prepare(base)
    assert [p.name for p in base.iterdir()] == [MARKER]


def _processes_of(base: Path) -> list[int]:
    """_processes_of lists the running processes of snaps installed under base (their $SNAP)."""
    found = []
    prefix = f"SNAP={base}/".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(item.startswith(prefix) for item in env):
                found.append(int(entry))
    return found


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    out = run("demo", "--dir", str(tmp_path))
    assert out.returncode == 1
    assert "not empty and not a demo directory" in out.stderr
    assert (tmp_path / "precious").read_text() == "keep me"
