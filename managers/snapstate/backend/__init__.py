# SPDX-License-Identifier: GPL-3.0-or-later
"""backend: the only code that touches files under the system root.

Layout under the root (see docs/managers.md)::

    snap/<name>/<revision>/          the extracted snap of each installed revision
    snap/<name>/current -> <rev>     the revision in use (a relative symlink)
    snap/bin/<name>[.<app>]          command wrappers of the current revision
    var/snap/<name>/<revision>/      the data of each revision
    var/snap/<name>/common/          data shared by every revision
    var/lib/snaps/<name>_<rev>.snap  the snap file each revision came from
    var/lib/snaps/partial/           downloads in progress
    var/lib/services/snap.<name>.<app>.json   each service: revision, command, active (should run)

Every method is idempotent: run again after a crash at any point of it,
it ends where one uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shlex
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ...asserts import encode_digest
from ...errors import InvalidSnapError, ManagerError
from ...snap import DEFAULT_LIMITS, AppInfo, Limits, SnapFile, SnapInfo
from ...snap.container import HOOKS_DIR, SNAP_YAML, with_hooks
from ...snap.environ import command_argv, snap_environment
from ...snap.info import MAX_YAML
from .fsutil import (
    atomic_symlink,
    atomic_write,
    copy_tree,
    fsync_dir,
    remove,
    remove_empty_dir,
    remove_tree,
)

log = logging.getLogger("managers.snapstate")

_CHUNK = 256 * 1024
#: MAX_NAME and MAX_REVISION are the longest snap name and revision text counted in a snap's path prefix.
MAX_NAME = 40
MAX_REVISION = 20

Opener = Callable[[], IO[bytes]]
Progress = Callable[[int, int], None]


class Backend:
    """Backend does the snap manager's file work under one system root."""

    def __init__(self, root: str | Path, limits: Limits = DEFAULT_LIMITS) -> None:
        self.root = Path(root).absolute()
        # A snap's paths are checked as they will be once extracted: under <root>/snap/<name>/<revision>/.
        prefix = len(os.fsencode(self.root)) + len("/snap/") + MAX_NAME + 1 + MAX_REVISION + 1
        self.limits = dataclasses.replace(limits, prefix=max(limits.prefix, prefix))

    # -- paths -------------------------------------------------------------------------

    def snap_dir(self, name: str) -> Path:
        """snap_dir is <root>/snap/<name>."""
        return self.root / "snap" / name

    def revision_dir(self, name: str, revision: str) -> Path:
        """revision_dir is where a revision is extracted."""
        return self.snap_dir(name) / revision

    def current_link(self, name: str) -> Path:
        """current_link is <root>/snap/<name>/current."""
        return self.snap_dir(name) / "current"

    def data_base(self, name: str) -> Path:
        """data_base is <root>/var/snap/<name>."""
        return self.root / "var" / "snap" / name

    def data_dir(self, name: str, revision: str) -> Path:
        """data_dir is the data directory of a revision."""
        return self.data_base(name) / revision

    def blob(self, name: str, revision: str) -> Path:
        """blob is the snap file a revision came from."""
        return self.root / "var" / "lib" / "snaps" / f"{name}_{revision}.snap"

    def partial_blob(self, name: str, revision: str) -> Path:
        """partial_blob is where a download of that revision is written until complete."""
        return self.root / "var" / "lib" / "snaps" / "partial" / f"{name}_{revision}.snap.partial"

    def bin_dir(self) -> Path:
        """bin_dir holds the command wrappers."""
        return self.root / "snap" / "bin"

    def services_dir(self) -> Path:
        """services_dir holds the recorded services."""
        return self.root / "var" / "lib" / "services"

    def service_file(self, name: str, app: str) -> Path:
        """service_file records one service of a snap."""
        return self.services_dir() / f"snap.{name}.{app}.json"

    def setup_root(self) -> None:
        """setup_root creates the directories every snap shares."""
        for d in (self.root / "snap" / "bin", self.root / "var" / "snap", self.partial_blob("x", "1").parent,
                  self.services_dir()):
            d.mkdir(parents=True, exist_ok=True)

    # -- fetching snap files ------------------------------------------------------------

    def fetch_blob(self, name: str, revision: str, opener: Opener, digest: str, size: int,
                   progress: Progress | None = None) -> None:
        """fetch_blob copies a snap file into place, resuming a partial copy, checking size and digest.

        The copy is written to the partial name and renamed only once it is
        complete and matches, so a crash never leaves a file that looks
        complete. progress(done, total) is called as it goes (it may raise
        to stop the copy). OSErrors of the source come out as they are
        (some are transient).
        """
        final = self.blob(name, revision)
        if final.exists():
            if self._matches(final, digest, size):
                return
            log.warning("%s does not match its digest; fetching it again", final)
            final.unlink()
        partial = self.partial_blob(name, revision)
        partial.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            h = hashlib.sha3_384()
            done = 0
            if partial.exists():
                done = partial.stat().st_size
                if done > size:
                    partial.unlink()
                    done = 0
                else:
                    with open(partial, "rb") as f:
                        while chunk := f.read(_CHUNK):
                            h.update(chunk)
            resumed = done > 0
            with opener() as src, open(partial, "ab") as out:
                if done:
                    src.seek(done)
                if progress is not None:
                    progress(done, size)
                while done <= size:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(min(done, size), size)
                out.flush()
                os.fsync(out.fileno())
            got = encode_digest(h.digest())
            if done == size and got == digest:
                os.replace(partial, final)
                fsync_dir(final.parent)
                return
            partial.unlink()
            if not resumed or attempt:
                raise ManagerError(f"cannot fetch snap {name!r} (revision {revision}): got {done} bytes with "
                                   f"sha3-384 {got}, expected {size} bytes with sha3-384 {digest}")
            log.info("the partial copy of %s (revision %s) did not match; copying again", name, revision)

    def _matches(self, path: Path, digest: str, size: int) -> bool:
        if path.stat().st_size != size:
            return False
        h = hashlib.sha3_384()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return encode_digest(h.digest()) == digest

    def remove_blob(self, name: str, revision: str) -> None:
        """remove_blob deletes a revision's snap file and any partial copy of it."""
        remove(self.blob(name, revision))
        remove(self.partial_blob(name, revision))

    # -- mounting (extracting) --------------------------------------------------------------

    def mount(self, name: str, revision: str) -> SnapInfo:
        """mount extracts a revision's snap file into its directory and returns its checked info."""
        target = self.revision_dir(name, revision)
        if target.is_dir():
            return self.read_info(name, revision)
        partial = target.with_name(f".{revision}.partial")
        remove_tree(partial)
        self.snap_dir(name).mkdir(parents=True, exist_ok=True)
        blob = self.blob(name, revision)
        with SnapFile(blob, self.limits) as f:
            info = f.info()
            if info.name != name:
                raise InvalidSnapError(f"cannot use snap {blob}: its snap.yaml names it {info.name!r}, "
                                       f"not {name!r}")
            f.extract(partial)
        os.rename(partial, target)
        fsync_dir(target.parent)
        return info

    def read_info(self, name: str, revision: str) -> SnapInfo:
        """read_info reads the snap.yaml of an extracted revision."""
        path = self.revision_dir(name, revision) / SNAP_YAML
        try:
            data = path.read_bytes()[:MAX_YAML + 1]
        except OSError as e:
            raise ManagerError(f"cannot read {path}: {e.strerror}") from None
        info = SnapInfo.from_yaml(data, str(path))
        top = self.revision_dir(name, revision)
        try:
            found = os.listdir(top / HOOKS_DIR)
        except (FileNotFoundError, NotADirectoryError):
            found = []

        def lookup(rel: str) -> tuple[str, int] | None:
            try:
                st = os.stat(top / rel)
            except OSError:
                return None
            return ("file" if stat.S_ISREG(st.st_mode) else "other", st.st_mode)

        return with_hooks(info, found, lookup, str(top))

    def hook_path(self, info: SnapInfo, hook: str) -> Path:
        """hook_path is the executable of a hook of an installed revision."""
        return self.revision_dir(info.name, info.revision) / HOOKS_DIR / hook

    def unmount(self, name: str, revision: str) -> None:
        """unmount deletes a revision's directory (and the snap's directory once empty)."""
        target = self.revision_dir(name, revision)
        remove_tree(target)
        remove_tree(target.with_name(f".{revision}.partial"))
        remove_empty_dir(self.snap_dir(name))

    # -- data ---------------------------------------------------------------------------------

    def copy_data(self, name: str, old: str | None, new: str, *, had_data: bool) -> None:
        """copy_data makes the data directory of new, a copy of old's (or empty), and common/.

        had_data says whether new had a data directory before the first run
        (a revision used before): it is moved aside to .<new>.old, for
        undo_copy_data to put back and cleanup_copy_data to delete.
        Otherwise what is at new is a copy an interrupted run made.
        """
        base = self.data_base(name)
        (base / "common").mkdir(parents=True, exist_ok=True)
        final, tmp, aside = base / new, base / f".{new}.partial", base / f".{new}.old"
        remove_tree(tmp)
        source = base / old if old and old != new else None
        if source is not None and source.is_dir():
            copy_tree(source, tmp)
        else:
            tmp.mkdir()
        if final.exists():
            if had_data and not aside.exists():
                os.rename(final, aside)
            else:
                remove_tree(final)
        os.rename(tmp, final)
        fsync_dir(base)

    def undo_copy_data(self, name: str, new: str, *, last: bool) -> None:
        """undo_copy_data deletes new's data (restoring what was set aside); last removes common/ too."""
        base = self.data_base(name)
        remove_tree(base / f".{new}.partial")
        remove_tree(base / new)
        aside = base / f".{new}.old"
        if aside.exists():
            os.rename(aside, base / new)
        if last:
            self.clear_data(name, None, last=True)

    def cleanup_copy_data(self, name: str, new: str) -> None:
        """cleanup_copy_data deletes the data set aside by copy_data."""
        remove_tree(self.data_base(name) / f".{new}.old")

    def clear_data(self, name: str, revision: str | None, *, last: bool) -> None:
        """clear_data deletes a revision's data; last also deletes common/ and the snap's data directory."""
        base = self.data_base(name)
        if revision is not None:
            remove_tree(base / revision)
        if last and base.exists():
            for p in sorted(base.iterdir()):
                remove_tree(p)
            remove_empty_dir(base)

    # -- linking -------------------------------------------------------------------------------

    def link(self, info: SnapInfo) -> None:
        """link makes info's revision current: the current symlink, command wrappers, services."""
        name, revision = info.name, info.revision
        atomic_symlink(revision, self.current_link(name))
        wanted_bins, wanted_services = set(), set()
        for app in info.apps.values():
            wrapper = self.bin_dir() / (name if app.name == name else f"{name}.{app.name}")
            wanted_bins.add(wrapper.name)
            content = self._wrapper(info, app.command).encode()
            if not wrapper.exists() or wrapper.read_bytes() != content:
                atomic_write(wrapper, content, 0o755)
            if app.daemon:
                path = self.service_file(name, app.name)
                wanted_services.add(path.name)
                current = self._service(path)
                if current is None or current.get("revision") != revision:
                    self._write_service(path, {"snap": name, "app": app.name, "revision": revision,
                                               "command": app.command, "daemon": app.daemon, "active": False})
        for stale in self._bins(name):
            if stale.name not in wanted_bins:
                remove(stale)
        for stale in self._services(name):
            if stale.name not in wanted_services:
                remove(stale)

    def unlink(self, name: str) -> None:
        """unlink removes the current symlink, the command wrappers and the services of a snap."""
        remove(self.current_link(name))
        for p in [*self._bins(name), *self._services(name)]:
            remove(p)

    def linked_revision(self, name: str) -> str | None:
        """linked_revision is the revision current points to, or None."""
        try:
            return os.readlink(self.current_link(name))
        except OSError:
            return None

    def _wrapper(self, info: SnapInfo, command: str) -> str:
        """_wrapper is what `overlord run` does, in sh: the snap's environment only, each word quoted.

        The words are command_argv's (the program in $SNAP, the snap's own
        variables written in), each quoted for sh, so the shell reads none
        of them as code, a variable, a glob or a comment; the caller's
        arguments follow as "$@".
        """
        env = snap_environment(info, self)
        argv = command_argv(AppInfo(name="wrapper", command=command), env)
        lines = ["#!/bin/sh", f"# {info.name}: command wrapper written by the snap manager (like `overlord run`)"]
        lines.append("exec /usr/bin/env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " +
                     " ".join(shlex.quote(word) for word in argv) + ' "$@"')
        return "\n".join(lines) + "\n"

    def wrapper_path(self, name: str, app: str) -> Path:
        """wrapper_path is the command wrapper of one app of a snap."""
        return self.bin_dir() / (name if app == name else f"{name}.{app}")

    def wrapper_text(self, info: SnapInfo, app: str) -> str:
        """wrapper_text is what the wrapper of an app of info's revision holds."""
        return self._wrapper(info, info.apps[app].command)

    def drift(self, info: SnapInfo, *, full: bool) -> list[str]:
        """drift lists how the files of info's revision (the current one of an active snap) differ from what
        link and mount made: stat calls only, and with full the wrappers' content too. Paths are relative to
        the root."""
        name, rev = info.name, info.revision
        out = []
        if not self.revision_dir(name, rev).is_dir():
            out.append(f"its revision directory {self.under_root(self.revision_dir(name, rev))} is missing")
        linked = self.linked_revision(name)
        if linked is None:
            out.append(f"its current link {self.under_root(self.current_link(name))} is missing")
        elif linked != rev:
            out.append(f"its current link points to {linked!r}, not {rev!r}")
        for app in sorted(info.apps):
            path = self.wrapper_path(name, app)
            try:
                st = path.stat()
            except OSError:
                out.append(f"its wrapper {self.under_root(path)} is missing")
                continue
            text = self.wrapper_text(info, app).encode()
            if st.st_size != len(text) or (full and path.read_bytes() != text):
                out.append(f"its wrapper {self.under_root(path)} was edited")
            if info.apps[app].daemon and not self.service_file(name, app).is_file():
                out.append(f"its service {self.under_root(self.service_file(name, app))} is missing")
        return out

    def under_root(self, path: Path) -> str:
        """under_root names path as messages show it: relative to the root."""
        return str(path.relative_to(self.root))

    def repair(self, info: SnapInfo) -> list[str]:
        """repair puts back what drift reports for the current revision: the revision's directory from its snap
        file (ManagerError when that is gone too: nothing is guessed), then current, the wrappers and the
        services (a service whose record was gone is started again). It returns what it did."""
        name, rev = info.name, info.revision
        done = []
        if not self.revision_dir(name, rev).is_dir():
            blob = self.blob(name, rev)
            if not blob.is_file():
                raise ManagerError(f"cannot repair snap {name!r}: revision {rev}'s directory and its snap file "
                                   f"{self.under_root(blob)} are both gone (reinstall it, or revert to another "
                                   "revision)")
            self.mount(name, rev)
            done.append(f"extracted revision {rev} again from {self.under_root(blob)}")
        missing = [a.name for a in info.services if not self.service_file(name, a.name).is_file()]
        before = self.drift(info, full=True)
        self.link(info)
        if missing:
            self.start_services(info, missing)
        done += [f"repaired: {d}" for d in before if "revision directory" not in d]
        return done

    def _bins(self, name: str) -> list[Path]:
        d = self.bin_dir()
        return sorted(p for p in d.glob(f"{name}*") if p.name == name or p.name.startswith(f"{name}."))

    def _services(self, name: str) -> list[Path]:
        return sorted(self.services_dir().glob(f"snap.{name}.*.json"))

    # -- services ---------------------------------------------------------------------------------

    def _service(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ManagerError(f"cannot read service {path}: {e}") from None
        return data if isinstance(data, dict) else None

    def _write_service(self, path: Path, data: dict[str, Any]) -> None:
        atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def services(self, name: str) -> dict[str, dict[str, Any]]:
        """services returns the recorded services of a snap, by app name."""
        out = {}
        for path in self._services(name):
            data = self._service(path)
            if data is not None:
                out[str(data.get("app"))] = data
        return out

    def active_services(self, name: str) -> list[str]:
        """active_services lists the apps of a snap whose services are active."""
        return sorted(app for app, data in self.services(name).items() if data.get("active"))

    def start_services(self, info: SnapInfo, apps: list[str]) -> None:
        """start_services marks services active, once their command is found in the snap."""
        for app in apps:
            path = self.service_file(info.name, app)
            data = self._service(path)
            if data is None or data.get("revision") != info.revision:
                raise ManagerError(f"cannot start service {info.name}.{app}: revision {info.revision} of "
                                   f"{info.name} is not linked")
            program = self.revision_dir(info.name, info.revision) / str(data["command"]).split()[0]
            if not os.access(program, os.X_OK):
                raise ManagerError(f"cannot start service {info.name}.{app}: {program} is not executable")
            if not data.get("active"):
                self._write_service(path, {**data, "active": True})

    def stop_services(self, name: str, apps: list[str]) -> None:
        """stop_services marks services inactive (a service that is not there is stopped already)."""
        for app in apps:
            path = self.service_file(name, app)
            data = self._service(path)
            if data is not None and data.get("active"):
                self._write_service(path, {**data, "active": False})

    # -- discarding ------------------------------------------------------------------------------

    def discard(self, name: str, revision: str, *, last: bool) -> None:
        """discard deletes a revision's files; last also removes the snap's directory."""
        remove_tree(self.revision_dir(name, revision))
        self.remove_blob(name, revision)
        if last:
            link = self.current_link(name)
            if link.is_symlink() and not link.exists():
                remove(link)
            remove_empty_dir(self.snap_dir(name))

    def remove_file(self, path: str | Path) -> bool:
        """remove_file deletes a file the snap manager may delete (an upload, a download); False: it was gone."""
        return remove(Path(path))

    def free_space(self) -> int:
        """free_space is how many bytes the file system of the root has free."""
        return shutil.disk_usage(self.root if self.root.exists() else self.root.parent).free


