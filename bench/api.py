# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench.api: round trips of the daemon's REST API with history, beside a trivial endpoint.

For each history size (10 and 10,000 ready changes of 5 tasks by default) it
builds a state directory with the engine, starts a real `overlord daemon` on
it, waits for READY=1, and times requests over the Unix socket with httpx:

- baseline: GET /v2/system-info (the HTTP stack, the envelope, no state);
- GET /v2/changes?select=all (every change with its tasks, snapd's shape);
- GET /v2/changes (in-progress: none are, but every change is looked at);
- GET /v2/changes/{id} (one change);

and, on a daemon with the sample store (overlord.samples) and its trusted key,
POST /v2/snaps/hello {"action": "install"} of the small sample snap (about
700 bytes): the round trip to the async answer (the change is built and
committed), and to the change being Done (polling GET /v2/changes/{id}
every 2 ms: download, assertions fetched and verified, extraction, links),
then the same for its removal, which puts the system back for the next run.

Each figure is the median of --runs requests after one warm-up; the size
of the answer is reported too. Timings are figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def build(state_dir: Path, changes: int, tasks: int) -> None:
    """build writes `changes` ready changes of `tasks` Done tasks each into state_dir/state.db."""
    from engine import State, Status

    state_dir.mkdir(parents=True, exist_ok=True)
    st = State.open(state_dir / "state.db", synchronous="NORMAL")
    try:
        for start in range(0, changes, 1000):
            with st:
                for i in range(start, min(changes, start + 1000)):
                    chg = st.new_change("install", f'Install "snap-{i}" snap')
                    chg.set("snap-names", [f"snap-{i}"])
                    prev = None
                    for j in range(tasks):
                        t = st.new_task(f"step-{j}", f'Step {j} of "snap-{i}"')
                        t.logf("step %d done", j)
                        if prev is not None:
                            t.wait_for(prev)
                        chg.add_task(t)
                        t.set_status(Status.DONE)
                        prev = t
    finally:
        st.close()


class Daemon:
    """Daemon is `overlord daemon` on a state directory, started and waited for with sd_notify."""

    def __init__(self, state_dir: Path, *extra: str) -> None:
        self.state_dir = state_dir
        notify = state_dir.parent / "notify.sock"
        notify.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify))
        self._notify.settimeout(300)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "overlord", "daemon", "--state-dir", str(state_dir),
                                      "--root", str(state_dir.parent / "root"), "--log-level", "warning", *extra],
                                     env=env, cwd=ROOT)
        while b"READY=1" not in self._notify.recv(4096):
            pass

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self._notify.close()


def time_requests(client: Any, path: str, runs: int) -> dict[str, Any]:
    """time_requests sends GET path runs times (after a warm-up) and returns the latencies in ms."""
    rsp = client.get(path)
    rsp.raise_for_status()
    size = len(rsp.content)
    values = []
    for _ in range(runs):
        t0 = time.perf_counter()
        rsp = client.get(path)
        rsp.content  # noqa: B018 (read it all)
        values.append((time.perf_counter() - t0) * 1000)
        rsp.raise_for_status()
    return {"path": path, "median_ms": statistics.median(values), "min_ms": min(values), "max_ms": max(values),
            "bytes": size, "runs": runs}


def measure(changes: int, tasks: int, runs: int, tmp: Path) -> list[dict[str, Any]]:
    """measure builds the history, starts a daemon and times each request."""
    import httpx

    state_dir = tmp / f"h{changes}" / "state"
    t0 = time.perf_counter()
    build(state_dir, changes, tasks)
    built = time.perf_counter() - t0
    d = Daemon(state_dir)
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(state_dir / "overlord.socket")),
                          base_url="http://overlord", timeout=600) as c:
            rows = [time_requests(c, "/v2/system-info", max(runs, 20))]
            slow_runs = runs if changes <= 1000 else max(3, runs // 5)
            rows.append(time_requests(c, "/v2/changes?select=all", slow_runs))
            rows.append(time_requests(c, "/v2/changes", slow_runs))
            rows.append(time_requests(c, f"/v2/changes/{max(1, changes // 2)}", max(runs, 20)))
    finally:
        d.stop()
    for row in rows:
        row.update({"history": changes, "tasks_per_change": tasks, "build_s": built})
    return rows


def _summary(path: str, values: list[float], size: int) -> dict[str, Any]:
    return {"path": path, "median_ms": statistics.median(values), "min_ms": min(values), "max_ms": max(values),
            "bytes": size, "runs": len(values)}


def measure_install(runs: int, tmp: Path) -> list[dict[str, Any]]:
    """measure_install times installing and removing the sample snap through the API (see the module doc)."""
    import httpx

    from overlord.samples import build_store, keys

    base = tmp / "install"
    root_key, publisher_key = keys(base / "keys")
    build_store(base / "store", root_key, publisher_key, build_dir=base / "snaps")
    state_dir = base / "state"
    state_dir.mkdir(parents=True)
    d = Daemon(state_dir, "--store", str(base / "store"), "--trusted-key", str(base / "keys" / "root.pub.pem"))
    timings: dict[str, list[float]] = {"install answer": [], "install done": [], "remove answer": [],
                                       "remove done": []}
    sizes: dict[str, int] = {}
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(state_dir / "overlord.socket")),
                          base_url="http://overlord", timeout=600) as c:
            for i in range(runs + 1):  # the first is a warm-up
                for action in ("install", "remove"):
                    t0 = time.perf_counter()
                    rsp = c.post("/v2/snaps/hello", json={"action": action})
                    answered = time.perf_counter()
                    if rsp.status_code != 202:
                        raise SystemExit(f"cannot {action} the sample snap: {rsp.text}")
                    cid = rsp.json()["change"]
                    while True:
                        chg = c.get(f"/v2/changes/{cid}").json()["result"]
                        if chg["ready"]:
                            break
                        time.sleep(0.002)
                    done = time.perf_counter()
                    if chg["status"] != "Done":
                        raise SystemExit(f"cannot {action} the sample snap: the change ended {chg['status']}: "
                                         f"{chg.get('err')}")
                    if i:
                        timings[f"{action} answer"].append((answered - t0) * 1000)
                        timings[f"{action} done"].append((done - t0) * 1000)
                    sizes[f"{action} answer"] = len(rsp.content)
                    sizes[f"{action} done"] = len(json.dumps(chg))
    finally:
        d.stop()
    return [{**_summary(f"POST hello {what}", values, sizes[what]), "history": "-", "tasks_per_change": None,
             "build_s": 0.0} for what, values in timings.items()]


def main(argv: list[str] | None = None) -> int:
    """main runs the API benchmark and prints its table."""
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,10000", help="history sizes, in changes (default: 10,10000)")
    p.add_argument("--tasks", type=int, default=5, help="tasks per change (default: 5)")
    p.add_argument("--runs", type=int, default=15, help="requests timed per figure (default: 15)")
    p.add_argument("--install-runs", type=int, default=10,
                   help="installs (and removals) of the sample snap timed (default: 10; 0: none)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where to build the state (default: a temp dir)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    tmp = Path(tempfile.mkdtemp(prefix="ovl-bench-", dir=args.tmp_dir or "/tmp"))
    rows: list[dict[str, Any]] = []
    try:
        for n in sizes:
            rows += measure(n, args.tasks, args.runs, tmp)
        if args.install_runs > 0:
            rows += measure_install(args.install_runs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'history':>8}  {'request':<26} {'median ms':>10} {'min .. max ms':>20} {'answer':>12}  runs")
    for r in rows:
        spread = f"{r['min_ms']:.2f} .. {r['max_ms']:.2f}"
        print(f"{r['history']:>8}  {r['path']:<26} {r['median_ms']:>10.2f} {spread:>20} "
              f"{r['bytes'] / 1024:>9.1f} KiB  {r['runs']}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
