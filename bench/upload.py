# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.upload: GET latency while a large, hostile snap upload is received and checked.

It starts a real `overlord daemon`, writes a snap file of --size MiB (1000
by default: an upload just under the daemon's 1 GiB limit; the file is
sparse, a stored entry of zeros), and posts it as snapd's sideload does
(multipart/form-data, not dangerous: the daemon checks the archive and
hashes it whole, then refuses it for want of assertions) from one client
while another client sends GET /v2/snaps (a request that takes the state
lock) every --interval ms until the upload is answered. With --links N the
snap also holds a chain of N symlinks through each other (`l0 -> l1/l1`,
...), refused by the check (resolving them afresh took time doubling per
link). The GETs are split by phase:

- idle: before the upload starts (the baseline);
- receiving: while the body arrives (the daemon's partial file grows);
- checking: once the body is all there, until the answer (the archive is
  checked whole and hashed; with the check under the state lock, every
  GET waited for it).

Each phase prints the median and the largest latency and how many GETs it
had. --daemon-path runs the daemon from another source tree (an older
commit extracted with `git archive`) to compare. Timings are figures,
never pass/fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from bench.api import ROOT, Daemon

_MiB = 1024 * 1024


def hostile_snap(path: Path, size_mib: int, links: int = 0) -> int:
    """hostile_snap writes a zip of a stored entry of zeros (sparse on disk) and a chain of links; returns its size."""
    big = size_mib * _MiB
    crc = 0
    zeros = bytes(_MiB)
    for _ in range(size_mib):
        crc = zlib.crc32(zeros, crc)
    entries: list[tuple[str, bytes, int, int]] = [  # name, data (None: the zeros), mode, size
        ("meta/snap.yaml", b"name: hostile\nversion: '1'\nsummary: a large upload\n", 0o100644, 0)]
    if links:
        entries += [(f"l{i}", f"l{i + 1}/l{i + 1}".encode(), 0o120777, 0) for i in range(links)]
        entries += [(f"l{links}", b".", 0o120777, 0)]
    entries += [("big", b"", 0o100644, big)]
    central = bytearray()
    with open(path, "wb") as f:
        for name, data, mode, zero_size in entries:
            raw = name.encode()
            size = zero_size or len(data)
            entry_crc = crc if zero_size else zlib.crc32(data)
            offset = f.tell()
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, entry_crc, size, size, len(raw), 0))
            f.write(raw)
            if zero_size:
                f.seek(zero_size, os.SEEK_CUR)  # a hole: the zeros cost no disk
            else:
                f.write(data)
            central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21, entry_crc, size,
                                   size, len(raw), 0, 0, 0, 0, mode << 16, offset) + raw
        start = f.tell()
        f.write(central)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), start, 0))
        return f.tell()


class _Daemon(Daemon):
    """_Daemon is bench.api's Daemon run from a source tree of choice (its directory first on sys.path)."""

    def __init__(self, state_dir: Path, tree: Path) -> None:
        notify = state_dir.parent / "notify.sock"
        notify.unlink(missing_ok=True)
        self.state_dir = state_dir
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify))
        self._notify.settimeout(300)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify), "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, "-m", "overlord", "daemon", "--state-dir", str(state_dir),
                                      "--root", str(state_dir.parent / "root"), "--log-level", "warning"],
                                     env=env, cwd=tree)
        while b"READY=1" not in self._notify.recv(4096):
            pass


def measure(size_mib: int, links: int, interval_ms: float, tmp: Path, tree: Path) -> dict[str, Any]:
    """measure runs the daemon, the upload and the GETs, and returns the latencies by phase."""
    import httpx

    snap = tmp / "hostile.snap"
    file_size = hostile_snap(snap, size_mib, links)
    state_dir = tmp / "state"
    state_dir.mkdir(parents=True)
    d = _Daemon(state_dir, tree)
    uploads = state_dir / "uploads"
    done = threading.Event()
    answer: dict[str, Any] = {}

    def upload() -> None:
        transport = httpx.HTTPTransport(uds=str(state_dir / "overlord.socket"))
        try:
            with httpx.Client(transport=transport, base_url="http://overlord", timeout=3600) as c, \
                    open(snap, "rb") as f:
                rsp = c.post("/v2/snaps", files={"snap": ("hostile.snap", f, "application/octet-stream")},
                             data={"dangerous": "false"})
            answer["status"] = rsp.status_code
            answer["message"] = rsp.json().get("result", {}).get("message", "")
        finally:
            done.set()

    phases: dict[str, list[float]] = {"idle": [], "receiving": [], "checking": []}
    try:
        transport = httpx.HTTPTransport(uds=str(state_dir / "overlord.socket"))
        with httpx.Client(transport=transport, base_url="http://overlord", timeout=3600) as c:
            c.get("/v2/snaps").raise_for_status()  # warm-up

            def get() -> float:
                t0 = time.perf_counter()
                c.get("/v2/snaps").raise_for_status()
                return (time.perf_counter() - t0) * 1000

            for _ in range(20):
                phases["idle"].append(get())
                time.sleep(interval_ms / 1000)
            t_start = time.perf_counter()
            threading.Thread(target=upload, daemon=True).start()
            received_at = None
            while not done.is_set():
                got = sum(p.stat().st_size for p in uploads.glob("*")) if uploads.is_dir() else 0
                if received_at is None and got >= file_size:
                    received_at = time.perf_counter()
                phases["checking" if received_at is not None else "receiving"].append(get())
                time.sleep(interval_ms / 1000)
            t_end = time.perf_counter()
    finally:
        d.stop()
    return {"phases": phases, "answer": answer, "file_mib": file_size / _MiB,
            "receive_s": (received_at or t_end) - t_start, "check_s": t_end - (received_at or t_end)}


def main(argv: list[str] | None = None) -> int:
    """main runs the upload benchmark and prints its table."""
    p = argparse.ArgumentParser(prog="python -m bench.upload", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1000, help="MiB of zeros in the snap (default: 1000)")
    p.add_argument("--links", type=int, default=0, help="symlinks through each other in the snap (default: 0)")
    p.add_argument("--interval", type=float, default=20, help="ms between GETs (default: 20)")
    p.add_argument("--daemon-path", type=Path, default=None,
                   help="run the daemon from this source tree (default: this one)")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where to work (default: a temp dir)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ovl-bench-upload-", dir=args.tmp_dir or "/tmp"))
    try:
        r = measure(args.size, args.links, args.interval, tmp, (args.daemon_path or ROOT).resolve())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"upload of {r['file_mib']:.0f} MiB: received in {r['receive_s']:.2f} s, checked and answered "
          f"{r['check_s']:.2f} s later: {r['answer'].get('status')} {r['answer'].get('message', '')[:100]}")
    print(f"daemon from {args.daemon_path or ROOT}, {args.links} symlinks through each other")
    print(f"{'phase':<10} {'GETs':>5} {'median ms':>10} {'max ms':>10}")
    for phase, values in r["phases"].items():
        if values:
            print(f"{phase:<10} {len(values):>5} {statistics.median(values):>10.2f} {max(values):>10.2f}")
        else:
            print(f"{phase:<10} {0:>5} {'-':>10} {'-':>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
