# SPDX-License-Identifier: GPL-3.0-or-later
"""HookManager: runs a snap's hooks as "run-hook" tasks (snapd's overlord/hookstate).

A run-hook task carries a HookSetup ("hook-setup": the snap, the hook,
whether a missing hook is fine, whether a failure is only logged, a
timeout). Its handler:

1. under the lock, reads the snap's current revision, makes a HookContext
   with a fresh random token, and calls the hook's Handler.before() (other
   managers register a handler per hook name: the configuration manager's
   applies the patch of `overlord set` to the context's transaction);
2. without the lock, runs meta/hooks/<hook> of the current revision as a
   real process (run.py) with the snap's environment, the token in
   SNAP_COOKIE and the daemon's socket in OVERLORD_SOCKET, so that
   `overlord ctl` in the hook acts for this snap only; the token is valid
   only while the hook runs;
3. under the lock, on success: handler.done(), the context's on-done
   functions (the transaction's commit), the output in the task's log and
   the task Done, in one transaction; on failure: the error fails the task
   (its lanes are undone), unless the setup says to ignore it (the remove
   hook), in which case it is logged and the task is Done.

Only one hook of a snap runs at a time: a blocked predicate holds back a
run-hook task while another of the same snap runs (as snapd's does).

A hook runs in a session and process group of its own, so a SIGKILL of the
daemon leaves it running, and its run-hook task (not Done) runs again
under the next daemon. With a run_dir, the manager keeps a run-time record
per running hook, <run_dir>/<task id>.json (managers/orphans.py, shared
with the service supervisor): the boot, a hash of the hook's token, and
the pid and start time of its process once it runs. Before a task's hook
runs, and at the manager's first ensure for every record left, a record of
a process that still runs (same pid, start time and boot; or a process of
its group carrying its token; or, with no pid recorded yet, a session
leader running the hook with its token) has its process group killed, and
only once nothing of that group is left does the hook run again: never two
copies at once. The orphan is not waited for: its context (the token that
`overlord ctl` needs, the configuration transaction its `ctl set` wrote
into) and the reading end of its output died with the daemon.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine import Retry, State, Status, Task, TaskRunner, Tomb

from ..errors import HookError, ManagerError
from ..orphans import (
    boot_id,
    find_leaders,
    group_members,
    kill_group_and_wait,
    process_start_time,
    read_record,
    still_running,
    write_record,
)
from ..snap.environ import snap_environment
from ..snapstate import get_snap_state
from .ctlserver import CtlFunction, CtlServer
from .run import HookRun, run_hook

if TYPE_CHECKING:
    from ..snapstate import SnapManager

log = logging.getLogger("managers.hookstate")

#: DEFAULT_TIMEOUT is how long a hook may run, in seconds, unless its setup or snap.yaml says otherwise (snapd's).
DEFAULT_TIMEOUT = 600.0
#: HOOK_TIMEOUTS are the defaults of particular hooks (snapd gives configure 5 minutes).
HOOK_TIMEOUTS = {"configure": 300.0}
#: COOKIE_ENV carries a hook's context token (snapd's name); OVERLORD_SOCKET_ENV the daemon's socket.
COOKIE_ENV = "SNAP_COOKIE"
SOCKET_ENV = "OVERLORD_SOCKET"
#: RETRY_SURVIVOR is when a hook runs again, in seconds, after a copy left by a killed daemon survived SIGKILL.
RETRY_SURVIVOR = 10.0
#: OUTPUT_LINES is how many of the last lines of a hook's output go to its task's log.
OUTPUT_LINES = 8


@dataclass
class HookSetup:
    """HookSetup is what a run-hook task runs (task data "hook-setup")."""

    snap: str
    hook: str
    #: A missing hook is not an error (the handler still runs).
    optional: bool = False
    #: A failing hook is logged on the task, which goes on (snapd's remove hook).
    ignore_error: bool = False
    #: Seconds before the hook is killed; None: snap.yaml's, else the manager's default for the hook.
    timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """to_dict is the JSON form stored on the task."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HookSetup:
        """from_dict reads the JSON form."""
        return cls(**{k.replace("-", "_"): v for k, v in data.items()})


def hook_setup(task: Task) -> HookSetup:
    """hook_setup is the HookSetup of a run-hook task (lock held)."""
    data = task.get("hook-setup", None)
    if not isinstance(data, dict):
        raise ManagerError(f"internal error: task {task.id} ({task.kind}) has no hook setup")
    return HookSetup.from_dict(data)


def hook_task(st: State, summary: str, setup: HookSetup, data: dict[str, Any] | None = None) -> Task:
    """hook_task makes a run-hook task for setup, with more task data (lock held)."""
    t = st.new_task("run-hook", summary)
    t.set("hook-setup", setup.to_dict())
    for k, v in (data or {}).items():
        t.set(k, v)
    return t


@dataclass
class HookContext:
    """HookContext is one run of a hook: its token, its snap, its task, and what handlers keep for the run.

    Everything in it is used with the state lock held.
    """

    token: str
    snap: str
    hook: str
    task: Task
    state: State
    _cache: dict[str, Any] = field(default_factory=dict)
    _on_done: list[Callable[[], None]] = field(default_factory=list)

    def cached(self, key: str) -> Any:
        """cached returns what was kept under key for this run (None: nothing)."""
        return self._cache.get(key)

    def cache(self, key: str, value: Any) -> None:
        """cache keeps value under key for this run."""
        self._cache[key] = value

    def on_done(self, fn: Callable[[], None]) -> None:
        """on_done adds fn to what runs, lock held, in the transaction that marks the hook's task Done."""
        self._on_done.append(fn)


class HookHandler(Protocol):
    """HookHandler reacts to one run of a hook; each method is called with the state lock held."""

    def before(self) -> None:
        """before runs before the hook (raise to fail the task without running the hook)."""

    def done(self) -> None:
        """done runs after the hook succeeded, in the transaction that finishes its task."""

    def error(self, err: HookError) -> bool:
        """error runs after the hook failed; returning True ignores the failure."""


HandlerFactory = Callable[[HookContext], HookHandler]


class HookManager:
    """HookManager registers "run-hook" and runs hooks; other managers add a handler per hook name."""

    def __init__(self, state: State, runner: TaskRunner, snap_manager: SnapManager, *,
                 run_dir: str | Path | None = None) -> None:
        self.state = state
        self.runner = runner
        self.snap_manager = snap_manager
        self.backend = snap_manager.backend
        self._factories: dict[str, HandlerFactory] = {}
        self._pseudo: set[str] = set()
        self._contexts: dict[str, HookContext] = {}
        self._mu = threading.Lock()
        #: The daemon's socket, for `overlord ctl` in hooks (OVERLORD_SOCKET); None: not served.
        self.socket: Path | None = None
        #: What `overlord ctl` runs when no daemon serves a socket (the configuration manager's run_ctl):
        #: the hook manager then serves it on a private socket of its own (ctlserver.py) while it runs.
        self.ctl: CtlFunction | None = None
        self._ctl_server: CtlServer | None = None
        #: A directory put first on a hook's PATH, where `overlord` is (the daemon's own by default).
        self.command_dir: Path | None = _command_dir()
        #: Timeouts by hook name, overriding DEFAULT_TIMEOUT (snap.yaml and a task's setup override these).
        self.timeouts: dict[str, float] = dict(HOOK_TIMEOUTS)
        #: Where the run-time records of running hooks are (None: none kept, a killed daemon's hooks are not found).
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._running: set[str] = set()  # tasks whose hook this manager runs now (their records are not orphans)
        self._reaping = threading.Lock()  # a record is reaped, or a run claims its task, one at a time
        self._reaped_all = False
        runner.add_handler("run-hook", self.do_run_hook)
        runner.add_blocked(self._blocked)
        snap_manager.add_affected_snaps("run-hook", lambda t: [hook_setup(t).snap])

    # -- the manager protocol ----------------------------------------------------------

    def ensure(self) -> None:
        """ensure, at its first pass, kills the hooks a killed daemon left running (their tasks may not run again)."""
        if self._reaped_all or self.run_dir is None:
            return
        self._reaped_all = True
        for path in sorted(self.run_dir.glob("*.json")):
            try:
                killed = self._reap(path.stem)
            except (OSError, ManagerError) as e:
                log.error("%s", e)
                continue
            if killed:
                with self.state:
                    task = self.state.task(path.stem)
                    if task is not None:
                        task.logf("%s", killed)

    def stop(self) -> None:
        """stop closes the private ctl socket, if one was served (running hooks are killed through their tombs)."""
        with self._mu:
            server, self._ctl_server = self._ctl_server, None
        if server is not None:
            server.close()

    @property
    def private_ctl_socket(self) -> Path | None:
        """private_ctl_socket is the socket the manager serves `overlord ctl` on itself (no daemon), once it does."""
        with self._mu:
            return self._ctl_server.socket if self._ctl_server is not None else None

    def _ctl_socket(self) -> Path | None:
        """_ctl_socket is where a hook's `overlord ctl` goes: the daemon's socket, else a private one, or None."""
        if self.socket is not None:
            return self.socket
        if self.ctl is None:
            return None
        with self._mu:
            if self._ctl_server is None:
                self._ctl_server = CtlServer(self.ctl)
            return self._ctl_server.socket

    # -- extension points --------------------------------------------------------------

    def register(self, hook: str, factory: HandlerFactory) -> None:
        """register makes factory(context) the handler of every run of hooks named hook."""
        self._factories[hook] = factory

    def add_pseudo_snap(self, name: str) -> None:
        """add_pseudo_snap lets run-hook tasks of name run their handler with no snap installed (e.g. "system")."""
        self._pseudo.add(name)

    def context(self, token: str) -> HookContext | None:
        """context returns the context of a hook running now with that token, or None."""
        if not isinstance(token, str) or not token:
            return None
        with self._mu:
            for known, ctx in self._contexts.items():
                if secrets.compare_digest(known, token):
                    return ctx
        return None

    def running_tokens(self) -> int:
        """running_tokens is how many hook tokens are valid now."""
        with self._mu:
            return len(self._contexts)

    def timeout_for(self, setup: HookSetup, yaml_timeout: float | None) -> float:
        """timeout_for is a hook's timeout: the task's setup, else snap.yaml's, else the manager's for the hook."""
        if setup.timeout is not None:
            return float(setup.timeout)
        if yaml_timeout is not None:
            return yaml_timeout
        return self.timeouts.get(setup.hook, DEFAULT_TIMEOUT)

    # -- the hooks a killed daemon left running ----------------------------------------------

    def _record_path(self, task_id: str) -> Path:
        assert self.run_dir is not None
        return self.run_dir / f"{re.sub(r'[^A-Za-z0-9_-]', '_', task_id)}.json"

    def _reap(self, task_id: str) -> str:
        """_reap kills what is left of an earlier run of task_id's hook by a daemon that died; it says what it did.

        The record is dropped once nothing of that run is left (a run of
        this manager's own is never touched). ManagerError when a process of
        the earlier run survives SIGKILL (the hook must not run beside it).
        """
        with self._reaping:
            with self._mu:
                if task_id in self._running:
                    return ""
            return self._reap_locked(task_id)

    def _reap_locked(self, task_id: str) -> str:
        path = self._record_path(task_id)
        rec = read_record(path)
        if rec is None:
            path.unlink(missing_ok=True)  # none, or unreadable (logged)
            return ""
        boot = boot_id()
        groups: list[int] = []
        if rec.get("boot-id") == boot:
            digest = rec.get("cookie-sha256")

            def carries_token(env: list[bytes]) -> bool:
                return any(e.startswith(b"SNAP_COOKIE=") and hashlib.sha256(e[12:]).hexdigest() == digest
                           for e in env)

            pid = rec.get("pid")
            if isinstance(pid, int):
                if still_running(rec, boot) or group_members(pid, carries_token):
                    groups.append(pid)
            else:  # the daemon died between the fork and the record of the pid
                argv = rec.get("argv")
                if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
                    groups.extend(find_leaders(argv, carries_token))
        what = f"hook {rec.get('hook')!r} of snap {rec.get('snap')}"
        for pgid in groups:
            log.warning("killing %s (process group %d), left running by a daemon that died", what, pgid)
            if not kill_group_and_wait(pgid):
                raise ManagerError(f"cannot run {what} again: process group {pgid}, left running by a daemon that "
                                   f"died, survives SIGKILL")
        path.unlink(missing_ok=True)
        if not groups:
            return ""
        return f"killed {what} (process group {', '.join(map(str, groups))}), left running by a daemon that died"

    def _claim(self, ctx: HookContext, task_id: str, argv: list[str]) -> tuple[Path, dict[str, Any]] | None:
        """_claim kills what an earlier daemon left of the task's hook, then records the run about to start."""
        if self.run_dir is None:
            return None
        with self._reaping:
            killed = self._reap_locked(task_id)
            if killed:
                with self.state:
                    ctx.task.logf("%s", killed)
            path = self._record_path(task_id)
            self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            rec = {"task": task_id, "snap": ctx.snap, "hook": ctx.hook, "argv": argv, "pid": None,
                   "boot-id": boot_id(), "cookie-sha256": hashlib.sha256(ctx.token.encode()).hexdigest()}
            with self._mu:
                self._running.add(task_id)
            try:
                write_record(path, rec)
            except BaseException:
                self._release(task_id, path)
                raise
        return path, rec

    def _release(self, task_id: str, path: Path) -> None:
        path.unlink(missing_ok=True)
        with self._mu:
            self._running.discard(task_id)

    # -- the handler -----------------------------------------------------------------------

    def _blocked(self, task: Task, running: list[Task]) -> bool:
        if task.kind != "run-hook":
            return False
        try:
            snap = hook_setup(task).snap
            return any(t.kind == "run-hook" and hook_setup(t).snap == snap for t in running)
        except ManagerError:
            return False

    def do_run_hook(self, task: Task, tomb: Tomb) -> None:
        """do_run_hook runs a hook of the snap's current revision, with its handler around it."""
        st = self.state
        with st:
            setup = hook_setup(task)
            snapst = get_snap_state(st, setup.snap)
            if snapst is None and setup.snap not in self._pseudo:
                raise ManagerError(f"cannot run hook {setup.hook!r} of snap {setup.snap!r}: it is not installed")
            info = snapst.info if snapst is not None else None
            hook = info.hooks.get(setup.hook) if info is not None else None
            if hook is None and not setup.optional and setup.snap not in self._pseudo:
                raise HookError(f"snap {setup.snap!r} has no {setup.hook!r} hook")
            factory = self._factories.get(setup.hook)
            if hook is None and factory is None:
                return
            ctx = HookContext(secrets.token_urlsafe(32), setup.snap, setup.hook, task, st)
            task_id = task.id
            handler = factory(ctx) if factory is not None else None
            if handler is not None:
                handler.before()
        failure: HookError | None = None
        output = ""
        if hook is not None and info is not None:
            timeout = self.timeout_for(setup, hook.timeout)
            with self._mu:
                self._contexts[ctx.token] = ctx
            try:
                run = self._run(ctx, task_id, info, timeout, tomb)
            finally:
                with self._mu:
                    self._contexts.pop(ctx.token, None)  # the token dies with the hook
            output = run.output
            if not run.ok:
                failure = HookError(f"run hook {setup.hook!r}: {run.problem(timeout)}")
        refused: HookError | None = None
        with st:
            _log_output(task, setup.hook, output)
            if failure is not None:
                if setup.ignore_error:
                    task.logf("ignoring failure in hook %r: %s", setup.hook, failure)
                    log.warning("snap %s: ignoring failure in hook %r: %s", setup.snap, setup.hook, failure)
                elif handler is None or not handler.error(failure):
                    refused = failure
            elif handler is not None:
                handler.done()
            if refused is None:
                for fn in ctx._on_done:
                    fn()
                if task.status is Status.DOING:
                    task.set_status(Status.DONE)
        if refused is not None:  # raised after the block, so that the output logged above stays
            raise refused

    def _run(self, ctx: HookContext, task_id: str, info: Any, timeout: float, tomb: Tomb) -> Any:
        env = snap_environment(info, self.backend)
        env[COOKIE_ENV] = ctx.token
        env["SNAP_CONTEXT"] = ctx.token  # snapd's older name
        socket = self._ctl_socket()
        if socket is not None:
            env[SOCKET_ENV] = str(socket)
        if self.command_dir is not None:
            env["PATH"] = f"{self.command_dir}{os.pathsep}{env.get('PATH', '')}"
        path = self.backend.hook_path(info, ctx.hook)
        cwd = Path(env.get("SNAP_DATA", "/"))
        if not cwd.is_dir():
            cwd = Path("/")
        argv = [str(path)]
        try:
            record = self._claim(ctx, task_id, argv)
        except ManagerError as e:  # an earlier copy that does not die yet (uninterruptible sleep): not beside it
            raise Retry(after=RETRY_SURVIVOR, reason=str(e)) from None

        def started(pid: int) -> None:
            if record is not None:
                write_record(record[0], {**record[1], "pid": pid, "start-time": process_start_time(pid)})

        log.info("running hook %r of snap %s (revision %s, timeout %g s)", ctx.hook, info.name, info.revision,
                 timeout)
        try:
            return run_hook(argv, env, cwd, timeout, tomb, started)
        except OSError as e:
            return HookRun(127, f"cannot run {path}: {e.strerror or e}")
        finally:
            if record is not None:
                self._release(task_id, record[0])


def _log_output(task: Task, hook: str, output: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    for line in lines[-OUTPUT_LINES:]:
        task.logf("%s: %s", hook, line[:1000])


def _command_dir() -> Path | None:
    """_command_dir is where the `overlord` command beside this interpreter is, if there is one."""
    d = Path(sys.executable).parent
    try:
        return d if (d / "overlord").exists() else None
    except OSError:  # a directory the daemon's user may not look into (another user's interpreter)
        return None
