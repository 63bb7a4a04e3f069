# SPDX-License-Identifier: GPL-3.0-or-later
"""W1 and W2 on PostgreSQL with 1, 2 and 4 runner processes, beside a raw psycopg baseline.

    python -m bench.pg                 # a throwaway server (tests/support/pgcluster.py), default durability
    python -m bench.pg --quick         # a smoke run (small sizes, one run each)

Each run: the parent submits one change (W1: 10,000 independent no-op tasks; W2: a chain of
1,000; W1x: W1's tasks spread over 100 changes) in one unit of work, starts N runner
processes (each an Overlord on the database, its handlers registered, waiting for the go),
gives the go, and takes the time from the go to the (last) change's ready time; then it
stops them. The baseline, on the same server and in the same run,
is psycopg alone: single-row UPDATE + COMMIT, one connection (what one synced commit costs).
The runs go round by round, the baseline and each process count once in every round (so that a
spell of a shared machine meets them all), and the ratios of the process counts, and of one
process to the round's own baseline, are printed for each round beside the ratio of the medians.
Figures are the median of the runs; nothing is asserted.
With --cpu, each run's line says what it cost each process (bench.pgwatch: the hosts, the server's processes,
the bench, the other programs of the machine), and each process count the CPU milliseconds a task cost its hosts
and the server: on a shared machine that moves far less than tasks/s, which follow the cores left over.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .workloads import noop_change

ROOT = Path(__file__).resolve().parent.parent


def _child(url: str, go: Path, workers: int, kinds: list[str]) -> int:
    """_child is one runner process: an Overlord on url that starts looping at the go, until SIGTERM."""
    from engine import Overlord

    o = Overlord(url=url, workers=workers)
    ran: list[float] = [0, 0.0]  # tasks run here, and when the first one ran (the wall clock)

    def noop(task: Any, tomb: Any) -> None:
        ran[0] += 1  # (under the GIL: a lost count would only blur the figure printed, not the run)
        if not ran[1]:
            ran[1] = time.time()

    for kind in kinds:
        o.task_runner.add_handler(kind, noop)
    return serve(o, go, ran)


def start_hosts(module: str, url: str, go: Path, workers: int, procs: int,
                extra: list[str]) -> list[subprocess.Popen[bytes]]:
    """start_hosts starts procs runner hosts (`python -m module --child ...`) and waits until each says ready."""
    cmd = [sys.executable, "-m", module, "--child", url, "--go", str(go), "--workers", str(workers), *extra]
    children = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
                for _ in range(procs)]
    for c in children:
        assert c.stdout is not None
        if c.stdout.readline().strip() != b"ready":
            for k in children:
                k.kill()
            raise RuntimeError("a runner process did not start")
    return children


def run_on_hosts(module: str, url: str, ids: list[int], tasks: int, procs: int, workers: int, tmp: Path,
                 timeout: float, extra: list[str], cpu: dict[str, Any] | None = None) -> float:
    """run_on_hosts starts procs runner hosts, lets them run the changes ids, and returns the seconds from the
    go to the last change's ready time (the database's clock); every one of the tasks must end Done.

    cpu, if given, gets what the run cost each process (bench.pgwatch: CPU seconds of each host, of the
    server's processes by role, of this one and of the rest of the machine, from the go to the end; the
    server's checkpoints, commits and autovacuums meanwhile), how many tasks each host ran, and how long
    after the go each host saw it.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    from engine._time import from_text

    from .pgwatch import Watch, postmaster_of

    go = tmp / f"go-{os.getpid()}-{time.monotonic_ns()}"
    children = start_hosts(module, url, go, workers, procs, extra)
    u = make_url(url)
    sock = u.query.get("host")
    watch = Watch([c.pid for c in children], postmaster_of(Path(str(sock)).parent / "data") if sock else None)
    try:
        conn = psycopg.connect(host=sock, user=u.username, dbname=u.database, autocommit=True)
        watch.start(conn)
        go_wall = time.time()
        go.touch()
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute("SELECT count(ready_time), max(ready_time) FROM changes WHERE id = ANY (%s)",
                               (ids,)).fetchone()
            if row and row[0] == len(ids):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the changes were not ready after {timeout:g} s")
            time.sleep(0.1)  # (the figure is the ready time the database holds: polling sooner only takes CPU)
            watch.look()
        watch.stop(conn)
        run_s = from_text(row[1]).timestamp() - go_wall
        done = conn.execute("SELECT count(*) FROM tasks WHERE change_id = ANY (%s) AND status = 'Done'",
                            (ids,)).fetchone()[0]
        conn.close()
        if done != tasks:
            raise RuntimeError(f"only {done} of {tasks} tasks are Done")
    finally:
        for c in children:
            c.send_signal(signal.SIGTERM)
        said = []
        for c in children:
            c.wait(60)
            out = c.stdout.read() if c.stdout is not None else b""
            said.append(json.loads(out.splitlines()[-1]) if out.strip() else {})
        go.unlink(missing_ok=True)
    if cpu is not None:
        cpu.update(watch.figures(time.time() - go_wall))
        cpu["hosts_ran"] = [s.get("ran") for s in said]
        cpu["hosts_go_ms"] = [round((s["go_seen"] - go_wall) * 1000, 1) if "go_seen" in s else None for s in said]
        cpu["hosts_first_ms"] = [round((s["first"] - go_wall) * 1000, 1) if s.get("first") else None for s in said]
    return run_s


def serve(o: Any, go: Path, ran: list[float] | None = None) -> int:
    """serve says ready, starts o's loop once the go file exists, and runs it until SIGTERM (a runner host).

    Once stopped it says, on one line of JSON, when it saw the go (the wall clock), how many handlers ran
    here and when the first one started (ran, if given: [count, wall clock time]).
    """
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    while not go.exists() and not stop:
        time.sleep(0.001)
    seen = time.time()
    o.loop()
    while not stop:
        time.sleep(0.05)
    o.stop()
    o.state.close()
    print(json.dumps({"go_seen": seen, "ran": int(ran[0]) if ran else None, "first": ran[1] if ran else None}),
          flush=True)
    return 0


def _submit(url: str, tasks: int, chained: bool, changes: int = 1) -> tuple[list[str], float]:
    from engine import State

    st = State.open(url=url)
    try:
        t0 = time.perf_counter()
        ids = []
        with st:
            for _ in range(changes):
                ids.append(noop_change(st, tasks // changes, chained=chained).id)
        return ids, time.perf_counter() - t0
    finally:
        st.close()


def one_run(url: str, tasks: int, chained: bool, procs: int, workers: int, tmp: Path,
            timeout: float, changes: int = 1, *, submit: Callable[[str], tuple[list[str], float]] | None = None,
            kinds: Sequence[str] = ("noop",)) -> dict[str, Any]:
    """one_run submits the change(s) and runs them with procs runner processes; it returns its figures.

    submit(url), if given, submits the work instead (it returns the change ids and its time);
    the runners register no-op handlers for kinds.
    """
    cids, submit_s = submit(url) if submit is not None else _submit(url, tasks, chained, changes)
    cpu: dict[str, Any] = {}
    run_s = run_on_hosts("bench.pg", url, [int(c) for c in cids], tasks, procs, workers, tmp, timeout,
                         ["--kinds", ",".join(kinds)], cpu)
    return {"submit_s": submit_s, "run_s": run_s, "tasks_per_s": tasks / run_s, "cpu": cpu}


def cpu_per_task(cpu: dict[str, Any], tasks: int) -> float | None:
    """cpu_per_task is the CPU milliseconds a run's hosts and server processes spent a task (None: not measured)."""
    if not cpu.get("wall_s") or not cpu.get("hosts_cpu_s"):
        return None
    return (sum(cpu["hosts_cpu_s"]) + sum(cpu["server_cpu_s"].values())) / tasks * 1000


def describe_run(cpu: dict[str, Any]) -> str:
    """describe_run says in one line what a run cost each process, what each host ran and when it saw the go."""
    from .pgwatch import describe

    ran = " + ".join(f"{n:,}" for n in cpu.get("hosts_ran", []) if n is not None)
    seen = ", ".join(f"{ms:+.0f} ms" for ms in cpu.get("hosts_go_ms", []) if ms is not None)
    first = ", ".join(f"{ms:+.0f} ms" for ms in cpu.get("hosts_first_ms", []) if ms is not None)
    return f"tasks run by each host {ran}; go seen at {seen}, first task at {first}; {describe(cpu)}"


def baseline(dsn: str, commits: int) -> float:
    """baseline is psycopg alone on the server: single-row UPDATE + COMMIT per second, one connection."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO bench_baseline VALUES (1, 0) ON CONFLICT DO NOTHING")
        conn.commit()
        t0 = time.perf_counter()
        for _ in range(commits):
            conn.execute("UPDATE bench_baseline SET n = n + 1 WHERE id = 1")
            conn.commit()
        return commits / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """main runs the PostgreSQL benchmarks and prints their figures."""
    p = argparse.ArgumentParser(prog="python -m bench.pg", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one run each")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--procs", default="1,2,4", help="runner process counts")
    p.add_argument("--only", default="w1,w1x,w2", help="the workloads to run (comma-separated)")
    p.add_argument("--workers", type=int, default=32, help="worker threads per runner process")
    p.add_argument("--json", type=Path, help="also save the figures to FILE")
    p.add_argument("--cpu", action="store_true",
                   help="print each run's CPU seconds per process (runner hosts, server, bench, other programs)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--go", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--kinds", default="noop", help=argparse.SUPPRESS)
    p.add_argument("--sizes", help="W1 tasks, W2 tasks and baseline commits (default 10000,1000,2000)")
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child, args.go, args.workers, args.kinds.split(","))
    runs = 1 if args.quick else args.runs
    w1, w2, commits = (500, 50, 200) if args.quick else (10_000, 1_000, 2_000)
    if args.sizes:
        w1, w2, commits = (int(x) for x in args.sizes.split(","))
    procs = [int(n) for n in args.procs.split(",")]
    sys.path.insert(0, str(ROOT))
    from tests.support import pgcluster

    cluster = pgcluster.start_cluster(durable=True)
    tmp = Path(cluster.root)
    figures: dict[str, Any] = {}
    try:
        template = cluster.new_database()
        url, dsn = cluster.url(template), cluster.dsn(template)
        from engine import State

        State.open(url=url).close()  # the schema, once: each run's database copies it
        base = [baseline(dsn, commits) for _ in range(runs)]
        figures["baseline.commits_per_s"] = statistics.median(base)
        print(f"baseline psycopg: single-row UPDATE+COMMIT {figures['baseline.commits_per_s']:,.0f} commits/s "
              f"({', '.join(f'{b:,.0f}' for b in base)})", flush=True)
        # w1x is W1 spread over 100 changes of 100 tasks: what several hosts can share (docs/scale-out.md).
        for name, tasks, chained, changes in (("w1", w1, False, 1), ("w1x", w1, False, 100 if w1 >= 1000 else 10),
                                              ("w2", w2, True, 1)):
            if name not in args.only.split(","):
                continue
            # Round by round, every process count once in each (a spell of the shared machine meets them all).
            rates: dict[int, list[float]] = {n: [] for n in procs}
            submits: dict[int, list[float]] = {n: [] for n in procs}
            cpus: dict[int, list[dict[str, Any]]] = {n: [] for n in procs}
            bases: list[float] = []
            for i in range(runs):
                bases.append(baseline(dsn, commits))  # (this round's own: the disk's rate moves by minutes)
                for n in procs:
                    db = cluster.new_database(template=template)
                    r = one_run(cluster.url(db), tasks, chained, n, args.workers, tmp, 600, changes)
                    cluster.drop_database(db)
                    rates[n].append(r["tasks_per_s"])
                    submits[n].append(r["submit_s"])
                    cpus[n].append(r["cpu"])
                    if args.cpu:
                        print(f"  {name} round {i + 1}, {n} process{'es' if n > 1 else ''}: "
                              f"{r['tasks_per_s']:,.0f} tasks/s; {describe_run(r['cpu'])}", flush=True)
            for n in procs:
                key = f"{name}.procs{n}"
                figures[f"{key}.tasks_per_s"] = statistics.median(rates[n])
                figures[f"{key}.submit_s"] = statistics.median(submits[n])
                figures[f"{key}.cpu"] = cpus[n]
                print(f"{name} ({tasks:,} {'chained' if chained else 'independent'} tasks in {changes} "
                      f"change{'s' if changes > 1 else ''}), {n} runner "
                      f"process{'es' if n > 1 else ''}: {figures[f'{key}.tasks_per_s']:,.0f} tasks/s "
                      f"({', '.join(f'{x:,.0f}' for x in rates[n])}); submit {figures[f'{key}.submit_s']:.3f} s",
                      flush=True)
                spent = [cpu_per_task(c, tasks) for c in cpus[n]]
                if args.cpu and all(x is not None for x in spent):
                    # (What a task costs does not move with the machine's load the way tasks/s does.)
                    figures[f"{key}.cpu_ms_per_task"] = statistics.median(x for x in spent if x is not None)
                    others = [c["others_cpu_s"] / c["wall_s"] for c in cpus[n]]
                    print(f"{name}, {n} runner process{'es' if n > 1 else ''}: "
                          f"{figures[f'{key}.cpu_ms_per_task']:.3f} ms of CPU a task, hosts and server "
                          f"({', '.join(f'{x:.3f}' for x in spent if x is not None)}); cores the other programs "
                          f"took: {', '.join(f'{x:.2f}' for x in others)}",
                          flush=True)
            rounds = [r / b for r, b in zip(rates[procs[0]], bases, strict=True)]
            figures[f"{name}.procs{procs[0]}.vs_round_baseline"] = rounds
            print(f"{name}: {procs[0]} process{'es' if procs[0] > 1 else ''} / the round's baseline in each round: "
                  f"{', '.join(f'{x:.2f}x ({b:,.0f} commits/s)' for x, b in zip(rounds, bases, strict=True))}; "
                  f"median {statistics.median(rounds):.2f}x", flush=True)
            for n in procs[1:]:
                rounds = [m / o for m, o in zip(rates[n], rates[procs[0]], strict=True)]
                figures[f"{name}.procs{n}.vs_first_rounds"] = rounds
                print(f"{name}: {n} processes / {procs[0]} in each round: "
                      f"{', '.join(f'{x:.2f}x' for x in rounds)}", flush=True)
        for name in ("w1", "w1x", "w2"):
            one = figures.get(f"{name}.procs1.tasks_per_s")
            for n in procs[1:]:
                if one:
                    figures[f"{name}.procs{n}.vs_one"] = figures[f"{name}.procs{n}.tasks_per_s"] / one
                    print(f"{name}: {n} processes / 1 process: {figures[f'{name}.procs{n}.vs_one']:.2f}x")
            if one:
                figures[f"{name}.procs1.vs_baseline"] = one / figures["baseline.commits_per_s"]
                print(f"{name}: 1 process tasks/s / baseline commits/s: {figures[f'{name}.procs1.vs_baseline']:.2f}")
    finally:
        pgcluster.remove_cluster(cluster)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
