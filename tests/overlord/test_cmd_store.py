# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord store init/push/release/list, and a daemon following the channels of a store made with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from managers.snap import pack
from overlord.samples import SNAPS, keys
from tests.support.daemon import DaemonProcess, invoke


@pytest.mark.heavy
def test_store_commands(tmp_path: Path, base: Path) -> None:
    keys(tmp_path / "keys")
    store = tmp_path / "store"
    ok = invoke("store", "init", str(store), "--root-key", str(tmp_path / "keys" / "root.pub.pem"))
    assert ok.exit_code == 0 and "store ready in" in ok.output, ok.output
    assert invoke("store", "list", "--store", str(store)).output.startswith("The store")
    v1, v2 = (pack(SNAPS / f"hello-{v}", tmp_path) for v in ("1.0", "2.0"))
    p = invoke("store", "push", str(v1), "--store", str(store), "--key", str(tmp_path / "keys" / "root.pem"),
            "--channel", "stable,edge")
    assert p.exit_code == 0, p.stderr
    assert p.output.startswith("pushed hello 1.0 as revision 1 (sha3-384 ") and "released to stable, edge" in p.output
    p = invoke("store", "push", str(v2), "--store", str(store), "--key", str(tmp_path / "keys" / "root.pem"))
    assert p.output.rstrip().endswith("not released to any channel"), p.output
    again = invoke("store", "push", str(v2), "--store", str(store), "--key", str(tmp_path / "keys" / "root.pem"))
    assert again.exit_code == 1 and again.stderr == ("error: cannot push hello_2.0.snap: it is revision 2 of snap "
                                                      "'hello' already (same sha3-384)\n")
    v3 = pack(SNAPS / "hello-3.0", tmp_path)
    other = invoke("store", "push", str(v3), "--store", str(store), "--key", str(tmp_path / "keys" / "acme.pem"))
    assert other.exit_code == 1 and "neither the store's root key" in other.stderr
    assert invoke("store", "release", "hello", "2", "beta", "--store", str(store)).output == \
        "released hello revision 2 to beta\n"
    bad = invoke("store", "release", "hello", "2", "nightly", "--store", str(store))
    assert bad.exit_code == 1 and bad.stderr.startswith("error: cannot use channel 'nightly'")
    rows = [line.split() for line in invoke("store", "list", "--store", str(store)).output.splitlines()]
    assert rows == [["Name", "Channel", "Rev", "Version"], ["hello", "stable", "1", "1.0"],
                    ["candidate", "↑", "1", "1.0"], ["beta", "2", "2.0"], ["edge", "1", "1.0"]]
    listed = json.loads(invoke("store", "list", "--store", str(store), "--json").output)
    assert listed[0]["channels"] == {"latest/stable": "1", "latest/candidate": "1", "latest/beta": "2",
                                     "latest/edge": "1"}
    assert listed[0]["revisions"] == ["2", "1"]

    # A daemon trusting that root key installs from the channels, and follows them.
    d = DaemonProcess(base, "--store", str(store), "--trusted-key",
                      str(tmp_path / "keys" / "root.pub.pem"))
    d.start()
    try:
        p = d.cli("install", "hello", "--channel", "beta")
        assert p.returncode == 0 and p.stdout.rstrip().endswith("hello (beta) 2.0 from root installed"), p.stderr
        assert d.cli("list").stdout.splitlines()[1].split()[:4] == ["hello", "2.0", "2", "beta"]
        p = d.cli("switch", "hello", "--channel", "stable")
        assert p.stdout.rstrip().endswith('"hello" switched to the "stable" channel'), (p.stdout, p.stderr)
        # stable offers revision 1, older than 2: refresh does not go back
        p = d.cli("refresh", "hello")
        assert p.returncode == 0 and "older than the current 2" in p.stderr, p.stderr
        p = d.cli("refresh", "hello", "--revision", "1")
        assert p.returncode == 0 and p.stdout.rstrip().endswith("hello 1.0 from root refreshed"), p.stderr
        assert d.cli("refresh", "--channel", "edge").returncode == 2
        with d.client() as c:
            assert c.snap("hello")["tracking-channel"] == "latest/stable"
    finally:
        d.stop()


def test_store_serve(tmp_path: Path) -> None:
    import subprocess

    import httpx

    from tests.support.daemon import child_env, overlord_cmd

    invoke("store", "init", str(tmp_path / "store"))
    proc = subprocess.Popen(overlord_cmd("store", "serve", str(tmp_path / "store"), "--port", "0"),
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"serving the store {tmp_path / 'store'} on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].strip()
        assert "format: 1" in httpx.get(url + "store.yaml").text
        assert httpx.post(url + "store.yaml").status_code == 501  # read only
    finally:
        proc.terminate()
        proc.wait(30)
