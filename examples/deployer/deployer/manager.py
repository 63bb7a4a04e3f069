# SPDX-License-Identifier: GPL-3.0-or-later
"""DeployManager: deploys files into a directory, all of a deployment or none of it.

A deployment is one change. Each file gets two tasks: `stage-file` writes its
content beside the target (in `.staging/`), and `deploy-file` moves it into
place, keeping the file it replaces (in `.backup/`) so that undo can put it
back. The `deploy-file` tasks of a change wait for every `stage-file`, so a
file that cannot be staged fails the change before anything is replaced;
one that cannot be deployed makes the engine undo the ones already deployed.

Every handler is idempotent: the engine runs a task at least once, and a
handler killed halfway runs again from its start (docs/testing.md shows how
tests/test_deployer.py proves it with engine.testing.check_idempotent).

A target directory holding a `.lock` file is busy (another tool is writing
it): `deploy-file` raises TargetBusyError and its retry policy runs it again
later, with growing delays, before giving up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import tenacity

from engine import Change, ChangeConflictError, Overlord, State, Task, TaskSet, Tomb

log = logging.getLogger("deployer")

#: DEPLOYMENTS_KEY is the state key holding what each deployed file's content digest is, by name.
DEPLOYMENTS_KEY = "deployed"
#: NAME is what a deployed file's name may be: no directories, no hidden files.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TargetBusyError(Exception):
    """TargetBusyError means another tool holds the target directory's .lock: try again later."""


def default_retry() -> tenacity.Retrying:
    """default_retry is deploy-file's policy: a busy target is tried again 5 times, waiting 1 s, 2 s, 4 s ..."""
    return tenacity.Retrying(retry=tenacity.retry_if_exception_type(TargetBusyError),
                             wait=tenacity.wait_exponential(multiplier=1, max=60),
                             stop=tenacity.stop_after_attempt(5))


def digest(content: str) -> str:
    """digest is the sha256 of a file's content, as the state records it."""
    return hashlib.sha256(content.encode()).hexdigest()


class DeployManager:
    """DeployManager owns the task kinds stage-file and deploy-file, and the deploy verb."""

    def __init__(self, o: Overlord, target: str | Path, *, retry: tenacity.Retrying | None = None) -> None:
        self.state = o.state
        self.target = Path(target)
        runner = o.task_runner
        runner.add_handler("stage-file", self._do_stage, self._undo_stage)
        runner.add_handler("deploy-file", self._do_deploy, self._undo_deploy, retry=retry or default_retry())
        o.add_manager(self)

    # -- the verb ------------------------------------------------------------------

    def deploy(self, files: dict[str, str]) -> Change:
        """deploy makes the change that deploys files (name -> content); the state lock must be held.

        It raises ValueError for a bad name and ChangeConflictError when an
        unready change deploys one of the same files.
        """
        if not files:
            raise ValueError("cannot deploy nothing")
        for name in files:
            if not NAME.match(name):
                raise ValueError(f"cannot deploy {name!r}: a name is letters, digits, '.', '_' and '-'")
        self._check_conflicts(self.state, set(files))
        chg = self.state.new_change("deploy", f"Deploy {', '.join(sorted(files))}")
        staged, deployed = TaskSet(), TaskSet()
        for name, content in sorted(files.items()):
            stage = self.state.new_task("stage-file", f"Stage {name}")
            stage.set("name", name)
            stage.set("content", content)
            staged.add_task(stage)
            move = self.state.new_task("deploy-file", f"Deploy {name}")
            move.set("name", name)
            move.set("digest", digest(content))
            deployed.add_task(move)
        deployed.wait_all(staged)
        chg.add_all(staged)
        chg.add_all(deployed)
        return chg

    def _check_conflicts(self, st: State, names: set[str]) -> None:
        for chg in st.changes():
            if chg.kind != "deploy" or chg.is_ready():
                continue
            busy = {t.get("name") for t in chg.tasks()} & names
            if busy:
                raise ChangeConflictError(chg.id, f"cannot deploy {sorted(busy)[0]!r}: change {chg.id} "
                                                  "is deploying it")

    def ensure(self) -> None:
        """ensure warns once about a deployed file that is gone from the target (someone removed it)."""
        with self.state:
            deployed = self.state.get(DEPLOYMENTS_KEY, {})
            for name in deployed:
                if not (self.target / name).exists():
                    self.state.add_warning(f"deployed file {name} is missing from {self.target}")

    # -- where files go ----------------------------------------------------------------

    def _paths(self, task: Task) -> tuple[str, Path, Path]:
        """_paths are a task's file name, its staged copy and the backup of what it replaces (lock held)."""
        name = task.get("name")
        chg = task.change()
        key = f"{chg.id if chg is not None else 'none'}-{name}"
        return name, self.target / ".staging" / key, self.target / ".backup" / key

    # -- handlers --------------------------------------------------------------------

    def _do_stage(self, task: Task, tomb: Tomb) -> None:
        with task.state:
            _, staged, _ = self._paths(task)
            content = task.get("content")
        staged.parent.mkdir(parents=True, exist_ok=True)
        tmp = staged.with_suffix(".tmp")
        tmp.write_text(content)
        os.replace(tmp, staged)  # all of it or nothing: a second run writes it again

    def _undo_stage(self, task: Task, tomb: Tomb) -> None:
        with task.state:
            _, staged, _ = self._paths(task)
        staged.unlink(missing_ok=True)

    def _do_deploy(self, task: Task, tomb: Tomb) -> None:
        with task.state:
            name, staged, backup = self._paths(task)
            want = task.get("digest")
        if (self.target / ".lock").exists():
            raise TargetBusyError(f"cannot deploy {name}: {self.target} is locked by another tool")
        target = self.target / name
        if staged.exists():
            # Keep what is replaced, once: a second run finds the backup made.
            if target.exists() and not backup.exists():
                backup.parent.mkdir(parents=True, exist_ok=True)
                tmp = backup.with_suffix(".tmp")
                tmp.write_bytes(target.read_bytes())
                os.replace(tmp, backup)
            os.replace(staged, target)
        elif not target.exists() or digest(target.read_text()) != want:
            raise RuntimeError(f"cannot deploy {name}: its staged copy is gone")
        with task.state:
            task.set("had-previous", backup.exists())
            deployed = task.state.get(DEPLOYMENTS_KEY, {})
            deployed[name] = want
            task.state.set(DEPLOYMENTS_KEY, deployed)
        log.info("deployed %s", name)

    def _undo_deploy(self, task: Task, tomb: Tomb) -> None:
        with task.state:
            name, _, backup = self._paths(task)
            had_previous = task.get("had-previous", backup.exists())
        target = self.target / name
        if had_previous:
            if backup.exists():
                os.replace(backup, target)
        else:
            target.unlink(missing_ok=True)
        with task.state:
            deployed = task.state.get(DEPLOYMENTS_KEY, {})
            if had_previous:
                deployed[name] = digest(target.read_text())
            else:
                deployed.pop(name, None)
            task.state.set(DEPLOYMENTS_KEY, deployed)
