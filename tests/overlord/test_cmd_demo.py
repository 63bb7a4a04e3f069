# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord demo: it seeds, installs, connects, refreshes, fails a refresh that is undone, shows connections and
changes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.support.daemon import invoke, run


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
    # Again in the same directory: it starts over.
    assert invoke("demo", "--dir", str(base)).exit_code == 0


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    out = run("demo", "--dir", str(tmp_path))
    assert out.returncode == 1
    assert "not empty and not a demo directory" in out.stderr
    assert (tmp_path / "precious").read_text() == "keep me"
