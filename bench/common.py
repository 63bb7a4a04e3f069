# SPDX-License-Identifier: GPL-3.0-or-later
"""Paths, sizes and the protocol between the benchmark driver and its child processes.

Every measurement runs in a fresh child process (``python -m bench._child``)
so that peak RSS (ru_maxrss) belongs to one scenario only; the child prints
one line ``BENCH-RESULT <json>`` with its figures.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TMP = ROOT / "var" / "bench-tmp"
DEFAULT_CACHE = ROOT / "var" / "bench-cache"
RESULT_PREFIX = "BENCH-RESULT "
#: Tasks per change in history databases (W3 and ensure cost): a chain of 10.
HISTORY_CHAIN = 10


class BenchError(Exception):
    """BenchError is a benchmark that could not produce its figures."""


def peak_rss_mib() -> float:
    """peak_rss_mib returns this process's peak resident set size in MiB (Linux: ru_maxrss is KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        kib //= 1024
    return kib / 1024.0


def _round10(n: float) -> int:
    return round(n / HISTORY_CHAIN) * HISTORY_CHAIN


@dataclass(frozen=True)
class Sizes:
    """Sizes are the workload sizes; the defaults are issue 5's."""

    w1_tasks: int = 10_000
    w2_tasks: int = 1_000
    w3_history: int = 100_000
    w3_chain: int = 10
    ensure_history: tuple[int, ...] = (0, 10_000, 100_000, 1_000_000)
    ensure_runnable: int = 10
    base_rows: int = 10_000
    base_single: int = 2_000
    base_batches: int = 500
    base_per_batch: int = 100
    dispatch_changes: int = 1_000
    snaps: int = 100

    def scaled(self, factor: float) -> Sizes:
        """scaled shrinks (or grows) the big sizes by factor; chains and batch widths stay."""
        if factor == 1:
            return self
        return replace(
            self,
            w1_tasks=max(10, int(self.w1_tasks * factor)),
            w2_tasks=max(5, int(self.w2_tasks * factor)),
            w3_history=max(HISTORY_CHAIN, _round10(self.w3_history * factor)),
            ensure_history=tuple(0 if n == 0 else max(HISTORY_CHAIN, _round10(n * factor))
                                 for n in self.ensure_history),
            base_rows=max(100, int(self.base_rows * factor)),
            base_single=max(20, int(self.base_single * factor)),
            base_batches=max(5, int(self.base_batches * factor)),
            dispatch_changes=max(20, int(self.dispatch_changes * factor)),
            snaps=max(2, int(self.snaps * factor)),
        )


@dataclass
class Config:
    """Config is one invocation of the benchmarks."""

    runs: int = 3
    sizes: Sizes = field(default_factory=Sizes)
    tmp_dir: Path = DEFAULT_TMP
    cache_dir: Path = DEFAULT_CACHE
    #: Generous bound for one child process (seconds); a hung engine fails the figure, not the run.
    child_timeout: float = 1800.0
    #: How long a child waits for a change to be ready.
    ready_timeout: float = 900.0
    verbose: bool = True
    #: Keep the run's temporary databases (under tmp_dir/run-*) for inspection.
    keep: bool = False
    #: SQLite's durability for baseline, w1, w2 and dispatch: FULL (the default), or NORMAL (opt-in:
    #: may lose the last commits on power loss, never corrupts).
    synchronous: str = "FULL"

    def as_json(self) -> dict[str, Any]:
        """as_json is the configuration as saved beside the figures."""
        d = asdict(self)
        d["tmp_dir"] = str(self.tmp_dir)
        d["cache_dir"] = str(self.cache_dir)
        return d


def child_command(kind: str, params: dict[str, Any]) -> list[str]:
    """child_command is the command line of one measurement child."""
    return [sys.executable, "-m", "bench._child", kind, json.dumps(params)]


def run_child(kind: str, params: dict[str, Any], *, timeout: float, prefix: list[str] | None = None) -> dict[str, Any]:
    """run_child runs one measurement in a fresh process and returns its figures."""
    cmd = [*(prefix or []), *child_command(kind, params)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{kind}: the child process did not finish within {timeout:g} s") from None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
            if "error" in result:
                raise BenchError(f"{kind}: {result['error']}")
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise BenchError(f"{kind}: the child process exited with {proc.returncode} and no figures:\n{tail}")


def copy_db(src: Path, dst: Path) -> Path:
    """copy_db copies a closed database file (no -wal left) to dst."""
    for suffix in ("-wal", "-shm"):
        if Path(str(src) + suffix).exists() and Path(str(src) + suffix).stat().st_size > 0:
            raise BenchError(f"cannot copy {src}: it has a non-empty {suffix} file (still open?)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    # Write the copy out now, so that its writeback does not land on a timed path.
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    # And the filesystem's journal (the new directory entry, the allocation):
    # otherwise the first synced commit of the run pays for it, more so for
    # bigger copies, which skews the history ratio.
    os.sync()
    return dst


def median(values: list[float]) -> float:
    """median is the middle value (the mean of the two middle ones for an even count)."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2
