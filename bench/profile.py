# SPDX-License-Identifier: GPL-3.0-or-later
"""Hot spots of a workload, sampled with py-spy across ALL threads.

The engine's work happens on the overlord loop thread, the recorder thread and
the worker threads, not on the main thread, so a single-thread profiler
(cProfile, pyinstrument) would see only the main thread waiting in
wait_ready(). py-spy samples every thread of the child process from outside.
Two recordings per workload:

- cpu: only the thread holding the GIL (--gil): where the Python CPU time
  goes, whichever thread spends it (waits for fsync, locks and queues release
  the GIL and are not in it);
- wall: every sample, idle ones included (--idle), read per thread for the
  serial stages (main thread, overlord loop, recorder): where each one's
  time goes, waits for fsync and for the lock included.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

from .common import ROOT, BenchError, Config, run_child

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \((?P<id>[^)]*)\)(?::\s*(?P<name>.*))?$")
_WRAPPER = re.compile(r"^(Thread\.(run|_bootstrap|_bootstrap_inner) \(threading\.py\)|_run_module_as_main |_run_code "
                      r"|<module> \(bench/_child\.py\)|main \(bench/_child\.py\))")
WALL_THREADS = ("MainThread", "engine-overlord", "engine-recorder", "engine-worker")

Sample = tuple[str, list[str], int]


def pyspy() -> str:
    """pyspy returns the py-spy executable (the venv's first)."""
    cand = Path(sys.executable).parent / "py-spy"
    found = str(cand) if cand.exists() else shutil.which("py-spy")
    if not found:
        raise BenchError("cannot profile: py-spy is not installed (pip install py-spy)")
    return found


def _short(file: str) -> str:
    root = str(ROOT) + "/"
    if file.startswith(root):
        return file[len(root):]
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1]
    if "/lib/python3" in file:
        return Path(file).name
    return file


def _key(frame: str) -> str:
    m = _FRAME.match(frame)
    if m is None:
        return frame
    return f"{m['func']} ({_short(m['file'])})"


def _thread(label: str) -> tuple[str, str | None]:
    m = _THREAD.match(label)
    if m is None:
        return label, None
    name = m["name"].strip() if m["name"] else None
    return m["id"], re.sub(r"-\d+$", "", name) if name else None


def _is_import(frames: list[str]) -> bool:
    return any("importlib._bootstrap" in f for f in frames)


def parse_raw(text: str, *, skip_imports: bool = True) -> list[Sample]:
    """parse_raw reads py-spy's raw (collapsed) output recorded with --threads.

    Threads are named by their name where py-spy saw it (workers merged);
    samples inside imports (the child's start-up) are dropped.
    """
    rows: list[tuple[str, str | None, list[str], int]] = []
    names: dict[str, str] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        tid, name = _thread(parts[0])
        if name:
            names[tid] = name
        frames = [_key(f) for f in parts[1:]]
        if frames and not (skip_imports and _is_import(frames)):
            rows.append((tid, name, frames, int(count)))
    return [(name or names.get(tid, f"thread {tid}"), frames, n) for tid, name, frames, n in rows]


def hotspots(samples: list[Sample], top: int = 20) -> list[tuple[str, float, float]]:
    """hotspots returns (function, inclusive %, self %) of the most inclusive functions."""
    total = sum(n for _, _, n in samples) or 1
    incl: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for _, frames, n in samples:
        for k in set(frames):
            incl[k] += n
        if frames:
            own[frames[-1]] += n
    # Frames that only start threads or the child say nothing; neither do those in every sample.
    rows = [(k, 100.0 * v / total, 100.0 * own[k] / total) for k, v in incl.most_common() if not _WRAPPER.match(k)]
    rows = [r for r in rows if r[1] < 99.5 or r[2] > 0.5]
    return rows[:top]


def top_self(samples: list[Sample], top: int = 15) -> list[tuple[str, float]]:
    """top_self returns the functions where samples end (self time), biggest first."""
    total = sum(n for _, _, n in samples) or 1
    own: Counter[str] = Counter()
    for _, frames, n in samples:
        if frames:
            own[frames[-1]] += n
    return [(k, 100.0 * v / total) for k, v in own.most_common(top)]


def by_thread(samples: list[Sample]) -> dict[str, list[Sample]]:
    """by_thread groups samples by thread name (workers merged)."""
    out: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        out[s[0]].append(s)
    return dict(out)


def summarise(name: str, cpu: list[Sample], wall: list[Sample], top: int = 20) -> str:
    """summarise formats the hot spots of one workload as text."""
    n_cpu = sum(n for *_, n in cpu)
    lines = [f"=== {name}: CPU samples (thread holding the GIL; imports left out), {n_cpu} samples ==="]
    threads = by_thread(cpu)
    total = sum(n for *_, n in cpu) or 1
    lines.append("share by thread: " + ", ".join(
        f"{t} {100.0 * sum(n for *_, n in ss) / total:.0f}%"
        for t, ss in sorted(threads.items(), key=lambda kv: -sum(n for *_, n in kv[1]))))
    lines.append(f"{'incl %':>7} {'self %':>7}  function (all threads)")
    for k, inc, own in hotspots(cpu, top):
        lines.append(f"{inc:7.1f} {own:7.1f}  {k}")
    lines.append("top self time (all threads):")
    for k, own in top_self(cpu):
        lines.append(f"{own:7.1f}%  {k}")
    wall_threads = by_thread(wall)
    for t in WALL_THREADS:
        ss = wall_threads.get(t)
        if not ss:
            continue
        lines.append(f"--- {name}: wall samples of thread {t} (idle included), {sum(n for *_, n in ss)} samples ---")
        lines.append(f"{'incl %':>7} {'self %':>7}  function")
        for k, inc, own in hotspots(ss, 12 if t != "engine-worker" else 6):
            lines.append(f"{inc:7.1f} {own:7.1f}  {k}")
    return "\n".join(lines)


def profile(cfg: Config, names: list[str], out_dir: Path, rate: int = 1000) -> str:
    """profile records each named workload once per mode under py-spy and returns the hot spots."""
    exe = pyspy()
    out_dir.mkdir(parents=True, exist_ok=True)
    s = cfg.sizes
    reports = []
    for name in names:
        if name not in ("w1", "w2"):
            print(f"[bench] profile: skipping {name} (only w1 and w2 are profiled)", file=sys.stderr)
            continue
        tasks = s.w1_tasks if name == "w1" else s.w2_tasks
        recorded: dict[str, list[Sample]] = {}
        for mode, flags in (("cpu", ["--gil"]), ("wall", ["--idle"])):
            raw = out_dir / f"{name}-{mode}.txt"
            db = out_dir / f"{name}-{mode}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            # --nonblocking: pausing the process for each sample (py-spy's default) with W1's 33
            # threads at 1 kHz slows it from thousands of tasks/s to tens, and distorts where time goes.
            prefix = [exe, "record", "--format", "raw", "--threads", "--nonblocking", "--rate", str(rate), *flags,
                      "-o", str(raw), "--"]
            r = run_child(name, {"db": str(db), "tasks": tasks, "ready_timeout": cfg.ready_timeout},
                          timeout=cfg.child_timeout, prefix=prefix)
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            print(f"[bench] profile {name} ({mode}): {r['tasks_per_s']:,.0f} tasks/s under py-spy; stacks in {raw}",
                  file=sys.stderr, flush=True)
            recorded[mode] = parse_raw(raw.read_text())
        text = summarise(f"{name} ({tasks:,} tasks)", recorded["cpu"], recorded["wall"])
        (out_dir / f"{name}-hotspots.txt").write_text(text + "\n")
        reports.append(text)
    return "\n\n".join(reports)
