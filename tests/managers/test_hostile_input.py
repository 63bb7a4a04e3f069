# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile input found by attacking the managers (docs/managers.md, "Hostile input: what is refused, the limits").

Each test feeds a real file, store or process what an attacker would and
checks the outcome is one clear error (or the bounded behaviour), never a
traceback, a hang or an unbounded read.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Status, Tomb
from engine.testing import FakeClock
from managers import InvalidAssertionError, InvalidSeedError, InvalidSnapError, ManagerError, StoreError
from managers.asserts import decode_stream
from managers.configstate import parse_key, parse_value
from managers.errors import ConfigError
from managers.firstboot import seed as seedmod
from managers.hookstate import run as hookrun
from managers.hookstate.ctlserver import CtlServer
from managers.servicestate import LOG_MAX, read_log_lines
from managers.servicestate.supervisor import Supervisor
from managers.snap import Limits, SnapFile, SnapInfo, valid_revision, valid_snap_name
from managers.snapstore import HttpSnapStore, SnapStore, serve_in_thread
from managers.snapstore.http import REQUESTS_KEPT
from managers.snapstore.records import SMALL_FILE
from tests.support.system import System

YAML = "name: hello\nversion: '1.0'\nsummary: Says hello\napps:\n  hello:\n    command: bin/hello\n"


def _entry(z: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    zi.create_system = 3
    zi.external_attr = mode << 16
    z.writestr(zi, data, compress_type=zipfile.ZIP_DEFLATED)


def _snap(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        _entry(z, "meta/snap.yaml", YAML.encode(), stat.S_IFREG | 0o644)
        _entry(z, "bin/hello", b"#!/bin/sh\necho hello\n" + b"x" * 4000, stat.S_IFREG | 0o755)
    return path


def _data_start(data: bytes, name: str) -> int:
    """_data_start is where the (compressed) data of member name starts in the archive data."""
    import io
    zi = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    name_len, extra_len = struct.unpack_from("<HH", data, zi.header_offset + 26)
    return zi.header_offset + 30 + name_len + extra_len


def _corrupt_deflate(data: bytes, name: str) -> bytes:
    out = bytearray(data)
    out[_data_start(data, name)] = 0x07  # a final block of the reserved type 3: zlib says "invalid block type"
    return bytes(out)


def _version_needed(data: bytes, version: int) -> bytes:
    """_version_needed sets the "version needed to extract" of every central directory entry."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        struct.pack_into("<H", out, pos + 6, version)
        pos = out.find(b"PK\x01\x02", pos + 1)
    return bytes(out)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: _corrupt_deflate(d, "meta/snap.yaml"), "cannot read meta/snap.yaml (Error -3 while decompressing"),
    (lambda d: _corrupt_deflate(d, "bin/hello"), "cannot extract 'bin/hello' (Error -3 while decompressing"),
    (lambda d: _version_needed(d, 99), "it is not a snap (zip) file (zip file version 9.9)"),
], ids=["deflate-in-snap-yaml", "deflate-in-a-file", "version-needed"])
def test_a_damaged_or_unsupported_zip_is_one_invalid_snap_error(tmp_path: Path, damage: Callable[[bytes], bytes],
                                                                 message: str) -> None:
    # zlib.error and NotImplementedError came out of zipfile as they were (a traceback, an internal error).
    path = tmp_path / "evil.snap"
    path.write_bytes(damage(_snap(tmp_path / "good.snap").read_bytes()))
    target = tmp_path / "out"
    with pytest.raises(InvalidSnapError) as e, SnapFile(path) as snap:
        snap.info()
        snap.extract(target)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_snap_path_that_is_a_fifo_or_a_device_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.snap"
    os.mkfifo(fifo)
    for path, what in ((fifo, "it is a FIFO, not a regular file"),
                       (Path("/dev/zero"), "it is a character device, not a regular file"),
                       (tmp_path, "it is a directory, not a regular file")):
        with pytest.raises(InvalidSnapError, match=what):
            _in_thread(lambda p=path: SnapFile(p), unblock=fifo)


def _in_thread(fn: Callable[[], Any], *, unblock: Path, timeout: float = 30.0) -> Any:
    """_in_thread runs fn in a thread; if it still runs after timeout (blocked on the FIFO unblock), the FIFO
    gets a writer that closes at once (so the thread ends) and the test fails."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        os.close(os.open(unblock, os.O_RDWR))  # a writer that closes: the blocked reader reads the end
        t.join(timeout)
        pytest.fail(f"{fn} blocked on a FIFO for {timeout} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


# -- a hostile snap store --------------------------------------------------------------------------------


@pytest.fixture
def served(system: System) -> Iterator[tuple[Path, str, Any]]:
    system.publish("hello", "1.0")
    server, url = serve_in_thread(system.base / "store")
    yield system.base / "store", url, server.RequestHandlerClass
    server.shutdown()
    server.server_close()


def test_a_store_index_with_aliases_is_refused_not_expanded(served: tuple[Path, str, Any]) -> None:
    # PyYAML's loaders share an aliased node: a 60 KB index.yaml of 200 aliases of a 10,000-revision list
    # read as 2,000,000 revisions (a 4 MiB one: billions, sorted per snap, exhausting memory).
    root, url, _ = served
    bomb = "big: &a [" + ", ".join(str(i) for i in range(1, 10001)) + "]\nsnaps:\n"
    bomb += "".join(f"  snap{i}: *a\n" for i in range(200))
    (root / "index.yaml").write_text(bomb)
    with pytest.raises(StoreError, match=r"aliases \(\*name\) are not allowed"):
        HttpSnapStore(url).names()
    (root / "snaps" / "hello" / "channels.yaml").write_text("latest/stable: &r 1\nlatest/edge: *r\n")
    with pytest.raises(StoreError, match=r"aliases \(\*name\) are not allowed"):
        SnapStore(root).channels("hello")


def test_a_store_entry_with_a_huge_number_is_one_store_error(served: tuple[Path, str, Any]) -> None:
    # 5,000 digits: int() raised ValueError past Python's 4,300-digit limit (a traceback); fewer gave a size
    # no file has.
    root, url, _ = served
    entry = root / "snaps" / "hello" / "1.yaml"
    entry.write_text(entry.read_text().replace("size:", "size: " + "9" * 5000 + "\nold-size:"))
    for store in (HttpSnapStore(url), SnapStore(root)):
        with pytest.raises(StoreError, match=r"the number 9{24}\.\.\. is too long"):
            store.snap("hello", "1")


def test_a_store_file_that_is_a_fifo_is_refused_and_a_long_one_never_cut(system: System) -> None:
    system.publish("hello", "1.0")
    root = system.base / "store"
    channels = root / "snaps" / "hello" / "channels.yaml"
    channels.unlink()
    os.mkfifo(channels)
    store = SnapStore(root)
    with pytest.raises(StoreError, match=r"channels\.yaml: it is a FIFO, not a regular file"):
        _in_thread(lambda: store.channels("hello"), unblock=channels)
    # Longer than the bound: refused (as over HTTP), not cut at the bound and parsed.
    channels.unlink()
    channels.write_text("latest/stable: 1\n" + "#" * SMALL_FILE + "\n")
    with pytest.raises(StoreError, match=f"it is longer than {SMALL_FILE} characters"):
        store.channels("hello")
    # The snap file itself: a FIFO is refused when the download opens it (EINVAL: not retried).
    channels.write_text("latest/stable: 1\n")
    blob = root / "snaps" / "hello" / "1.snap"
    blob.unlink()
    os.mkfifo(blob)
    with pytest.raises(OSError, match="it is a FIFO, not a regular file"):
        _in_thread(lambda: store.open(store.snap("hello")), unblock=blob)


def test_the_store_server_refuses_bad_ranges_and_remembers_few_requests(served: tuple[Path, str, Any]) -> None:
    _, url, handler = served
    host, port = url.split("//")[1].rstrip("/").split(":")

    def get(path: str, rng: str | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("GET", path, headers={"Range": rng} if rng else {})
            rsp = conn.getresponse()
            return rsp.status, rsp.read()
        finally:
            conn.close()

    assert get("/snaps/hello/1.snap", "bytes=10-5")[0] == 416  # was a negative Content-Length
    assert get("/snaps/hello/1.snap", "bytes=" + "9" * 5000 + "-")[0] == 416  # was a ValueError in the server
    assert get("/snaps/hello/1.snap", "bytes=0-9") == (206, (Path(handler.root) / "snaps/hello/1.snap")
                                                       .read_bytes()[:10])
    for _ in range(REQUESTS_KEPT + 10):
        get("/index.yaml")
    assert len(handler.requests) == REQUESTS_KEPT  # a server runs for ever: its record of requests is bounded


# -- hostile assertions, seeds, ctl ----------------------------------------------------------------------


def test_an_assertion_whose_body_length_has_thousands_of_digits_is_refused() -> None:
    text = "type: account\nauthority-id: root\nbody-length: " + "9" * 5000 + "\n\n" + "A" * 88 + "\n"
    with pytest.raises(InvalidAssertionError, match="body longer than 2097152 bytes"):
        decode_stream(text)


def test_a_seeds_assertions_are_bounded_all_files_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "assertions"
    d.mkdir()
    monkeypatch.setattr(seedmod, "MAX_ASSERTIONS_FILE", 1000)
    for i in range(3):
        (d / f"part{i}").write_text("\n" * 600)  # each under the bound, together over it
    with pytest.raises(InvalidSeedError, match="assertions hold more than 1000 bytes, all files together"):
        seedmod._assertions(tmp_path)
    monkeypatch.setattr(seedmod, "MAX_ASSERTION_FILES", 5)
    for i in range(3, 6):
        (d / f"part{i}").write_text("")
    with pytest.raises(InvalidSeedError, match="assertions/ holds more than 5 files"):
        seedmod._assertions(tmp_path)


def test_a_ctl_value_nested_past_the_parser_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="it nests too deeply"):
        parse_value("[" * 100_000)


def test_the_ctl_server_answers_400_to_a_body_that_is_no_object_or_nests_too_deeply() -> None:
    server = CtlServer(lambda token, args: "ok\n")
    try:
        for body in (b"[]", b"42", b"[" * 100_000):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(str(server.socket))
                s.sendall(b"POST /v2/snapctl HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 400"), head
            assert json.loads(payload)["result"]["kind"] == "bad-request"
    finally:
        server.close()


# -- a hook that leaves a child writing ------------------------------------------------------------------


def test_a_hook_child_left_writing_never_has_the_daemon_read_a_reused_descriptor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader thread kept reading the hook's pipe by its number after run_hook closed it; the daemon's next
    # pipe, socket or file given that number was then read (stolen) by it.
    hook = tmp_path / "hook"
    hook.write_text("#!/bin/sh\n( while :; do echo more; sleep 0.02; done ) &\necho started\n")
    hook.chmod(0o755)
    seen: dict[str, int] = {}

    class Popen(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            assert self.stdout is not None
            seen["fd"], seen["pid"] = self.stdout.fileno(), self.pid

    monkeypatch.setattr(hookrun.subprocess, "Popen", Popen)
    try:
        run = hookrun.run_hook([str(hook)], {"PATH": "/usr/bin:/bin"}, tmp_path, 30, Tomb())
        assert run.ok and run.output.startswith("started\n")
        assert not [t for t in threading.enumerate() if t.name == f"hook-output-{seen['pid']}"]
        # The daemon's next descriptor of that number: a pipe (dup2 stands for whatever open() reuses it).
        r0, w0 = os.pipe()
        r, w = fcntl.fcntl(r0, fcntl.F_DUPFD, 100), fcntl.fcntl(w0, fcntl.F_DUPFD, 100)
        os.close(r0)
        os.close(w0)
        os.dup2(r, seen["fd"])
        os.close(r)
        os.write(w, b"secret\n")
        os.set_blocking(seen["fd"], False)
        assert os.read(seen["fd"], 100) == b"secret\n"
        os.close(seen["fd"])
        os.close(w)
    finally:
        hookrun.kill_group(seen["pid"], 9)


# -- a service that writes without end -------------------------------------------------------------------


def test_a_log_written_faster_than_it_is_rotated_is_kept_and_read_bounded(tmp_path: Path, clock: FakeClock) -> None:
    # A service writing at disk speed puts gigabytes in its log between two checks (10 s): the rotated copies
    # were copies of all of it (3 files of gigabytes), and `overlord logs -n 1` read every byte of the three
    # into memory, under the state lock.
    sup = Supervisor(tmp_path / "run", clock)
    sup._setup()
    log = sup.log_path("loud.svc")
    line = b"x" * 99 + b"\n"
    with open(log, "wb") as f:
        for _ in range(3):
            f.write(line * (LOG_MAX // 100 * 8))  # 8 MiB
            f.flush()
        f.write(b"the end\n")
    sup.rotate("loud.svc")
    rotated = log.with_name(log.name + ".1")
    assert log.stat().st_size == 0 and rotated.stat().st_size <= LOG_MAX
    assert rotated.read_bytes().endswith(line + b"the end\n") and rotated.read_bytes().startswith(line)
    with open(log, "wb") as f:
        f.write(line * (LOG_MAX // 100 * 24) + b"last\n")  # 24 MiB since the rotation
    tracemalloc.start()
    try:
        assert read_log_lines(log, 1) == ["last"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * LOG_MAX, peak  # three files of LOG_MAX, decoded and split; it was the 24 MiB and more


# -- names and keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name: \"hello\\n\"", "version: \"1.0\\n\"",
                                   "apps: {\"hello\\n\": {command: bin/hello}}", "plugs: {\"net\\n\": network}"])
def test_a_name_with_a_trailing_newline_is_refused(field: str) -> None:
    # Python's $ matches before a final newline: every ^...$ check of the managers let "hello\n" through
    # (a snap directory and wrapper named with a line break, a version or plug that prints as another).
    base = {"name": "name: hello", "version": "version: '1.0'", "apps": "", "plugs": ""}
    base[field.split(":")[0]] = field
    text = "\n".join(v for v in base.values() if v) + "\nsummary: s\n"
    with pytest.raises(InvalidSnapError):
        SnapInfo.from_yaml(text)
    assert not valid_snap_name("hello\n") and not valid_revision("1\n")
    with pytest.raises(ConfigError):
        parse_key("port\n")


def test_an_option_name_of_digits_is_refused_at_once() -> None:
    # snapd's option-name regex is ambiguous: Python's backtracking took 14 s for 26 digits (days for 40), with
    # the state lock held, for anyone who may read a snap's configuration (every local user). It runs in a
    # child so that, before the fix, the test fails at the bound instead of running for days.
    code = "from managers.configstate import parse_key\ntry:\n    parse_key('9' * 40)\nexcept Exception as e:\n" \
           "    print(type(e).__name__)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout == "ConfigError\n"


@pytest.mark.parametrize("name", ["a" * 5000, "9" * 5000, "x" * 300])
def test_a_verb_given_a_name_too_long_for_a_conflict_key_refuses_it_in_its_own_words(system: System,
                                                                                     name: str) -> None:
    # The conflict check built the engine's key "snap:<name>" before any check of the name: a ValueError of the
    # engine (an internal error) out of install, remove, revert, enable and disable.
    sm = system.sm
    for verb in (sm.install, sm.remove, sm.revert, sm.enable, sm.disable):
        with system.o.state, pytest.raises(ManagerError) as e:
            verb(name)
        assert "\n" not in str(e.value)


def test_a_store_snap_larger_than_any_snap_file_is_refused_before_its_download(system: System) -> None:
    # The size a store gives is checked against the snap-revision assertion only after the download: a store
    # announcing (and sending) 3 GiB had them written to disk first, bounded only by the free space.
    system.publish("hello", "1.0")
    entry = system.base / "store" / "snaps" / "hello" / "1.yaml"
    huge = 3 * 1024 * 1024 * 1024  # more than DEFAULT_LIMITS.max_file (2 GiB), less than the free space
    entry.write_text("\n".join(f"size: {huge}" if line.startswith("size:") else line
                               for line in entry.read_text().splitlines()) + "\n")
    cid = system.run(lambda sm: sm.install("hello"))
    assert system.status(cid) is Status.ERROR
    assert f"its file is {huge} bytes, more than a snap file may be" in system.err(cid)
    tasks = dict(system.tasks(cid))
    assert tasks["prerequisites"] is Status.ERROR and tasks["download-snap"] is Status.HOLD, tasks


def test_a_snap_file_larger_than_max_file_is_refused_when_opened(tmp_path: Path) -> None:
    path = _snap(tmp_path / "big.snap")
    with pytest.raises(InvalidSnapError, match="more than the limit of 100 for a snap file"):
        SnapFile(path, Limits(max_file=100))
    SnapFile(path).close()
