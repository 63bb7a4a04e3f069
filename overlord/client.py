# SPDX-License-Identifier: GPL-3.0-or-later
"""The client of the daemon's REST API: the only way the command line talks to the daemon.

    with Client() as c:                      # socket from $OVERLORD_STATE_DIR or /var/lib/overlord
        for chg in c.changes(select="all"):
            print(chg["id"], chg["status"], chg["summary"])

Results are the API's JSON objects (docs/daemon.md describes them). Errors
are ClientError: DaemonUnavailable when no daemon answers on the socket,
ApiError when the daemon answers with an error envelope (its kind is one of
the daemon's documented error kinds).
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import tenacity

from . import paths

#: DEFAULT_TIMEOUT is how long one request may take, in seconds.
DEFAULT_TIMEOUT = 30.0
#: The header that names a request making a change (the daemon's IDEMPOTENCY_HEADER).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: How many times change_request sends a request in all when the daemon goes away before answering.
RETRY_ATTEMPTS = 4
#: KEY_ENV names the environment variable whose value, when set, is the Idempotency-Key of the requests that
#: make a change (instead of a new random one): a command run again with the key its first run said gets the
#: change that run made, if it made one, instead of making another.
KEY_ENV = "OVERLORD_IDEMPOTENCY_KEY"


class ClientError(Exception):
    """ClientError is any failure to get an answer from the daemon; str() is one line."""


class DaemonUnavailable(ClientError):
    """DaemonUnavailable means no daemon answers on the socket."""

    def __init__(self, socket: Path, reason: str, *, went_away: bool = False) -> None:
        self.socket = socket
        #: went_away is True when a daemon was reached and the connection then dropped (it stopped or was
        #: killed mid-answer); False when nobody answered at all.
        self.went_away = went_away
        super().__init__(f"cannot reach the overlord daemon at {socket}: {reason}")


class ApiError(ClientError):
    """ApiError is an error envelope: the daemon's message, its kind, the HTTP status and an optional value."""

    def __init__(self, message: str, kind: str, status_code: int, value: Any = None) -> None:
        self.message = message
        self.kind = kind
        self.status_code = status_code
        self.value = value
        super().__init__(message)


class Client:
    """Client sends requests to the daemon over its Unix socket."""

    def __init__(self, state_dir: str | Path | None = None, *, socket: str | Path | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket = Path(socket) if socket is not None else paths.socket_path(state_dir)
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                                  base_url="http://overlord", timeout=timeout)
        #: How many warnings the daemon said were pending in its last answer, and the newest one's time.
        self.warning_count = 0
        self.warning_timestamp: datetime | None = None

    def close(self) -> None:
        """close closes the connection."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the wire ----------------------------------------------------------------------

    def request(self, method: str, path: str, *, query: dict[str, str] | None = None,
                body: Any = None, timeout: float | None = None) -> dict[str, Any]:
        """request sends one request and returns the envelope, raising ApiError for an error envelope.

        timeout, when given, replaces the client's for this request (a long-poll waits longer).
        """
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if content is not None else {}
        rsp = self.send(method, path, query=query, content=content, headers=headers, timeout=timeout)
        return self.envelope(rsp, method, path)

    def send(self, method: str, path: str, *, query: dict[str, str] | None = None, content: Any = None,
             headers: dict[str, str] | None = None, files: Any = None, data: Any = None,
             timeout: float | None = None) -> httpx.Response:
        """send sends one request and returns the raw HTTP response (DaemonUnavailable when nobody answers)."""
        try:
            if timeout is not None:
                return self._http.request(method, path, params=query, content=content, headers=headers,
                                          files=files, data=data, timeout=timeout)
            return self._http.request(method, path, params=query, content=content, headers=headers, files=files,
                                      data=data)
        except httpx.TransportError as e:
            raise DaemonUnavailable(self.socket, _reason(e),
                                    went_away=not isinstance(e, httpx.ConnectError | httpx.ConnectTimeout)) from None

    def envelope(self, rsp: httpx.Response, method: str, path: str) -> dict[str, Any]:
        """envelope reads the API envelope of a response, raising ApiError for an error envelope."""
        try:
            envelope = rsp.json()
            if not isinstance(envelope, dict) or "type" not in envelope:
                raise ValueError("no envelope")
            if envelope["type"] == "error" and not isinstance(envelope.get("result") or {}, dict):
                raise ValueError("an error without its message")
            count = int(envelope.get("warning-count") or 0)
            stamp = envelope.get("warning-timestamp")
            when = parse_time(stamp) if isinstance(stamp, str) else None
        except (ValueError, TypeError):
            raise ClientError(f"cannot understand the daemon's answer to {method} {path} "
                              f"(HTTP {rsp.status_code}, not an API envelope)") from None
        self.warning_count, self.warning_timestamp = count, when
        if envelope["type"] == "error":
            result = envelope.get("result") or {}
            raise ApiError(str(result.get("message") or f"HTTP {rsp.status_code}"), str(result.get("kind") or ""),
                           rsp.status_code, result.get("value"))
        return envelope

    def change_request(self, method: str, path: str, body: Any, *, key: str | None = None) -> dict[str, Any]:
        """change_request sends a request that makes a change, with an Idempotency-Key header (key, or a new
        random one), and sends it again with the same key when the daemon went away before answering: the
        daemon then answers with the change the first request made, if it made one (docs/daemon.md).
        """
        content = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        return self._keyed(method, path, key, lambda key: self.send(method, path, content=content,
                                                                    headers={**headers, IDEMPOTENCY_HEADER: key}))

    def upload_request(self, path: str, field: str, file: str | Path, data: dict[str, str], *,
                       key: str | None = None) -> dict[str, Any]:
        """upload_request posts a file (a multipart/form-data form: the file in field, and the fields of data)
        that makes a change, with an Idempotency-Key as change_request does; a retry sends the file again."""
        p = Path(file)

        def send(key: str) -> httpx.Response:
            with open(p, "rb") as f:
                return self.send("POST", path, files={field: (p.name, f, "application/octet-stream")}, data=data,
                                 headers={IDEMPOTENCY_HEADER: key})

        return self._keyed("POST", path, key, send)

    def _keyed(self, method: str, path: str, key: str | None,
               send: Callable[[str], httpx.Response]) -> dict[str, Any]:
        key = key or os.environ.get(KEY_ENV) or uuid.uuid4().hex
        went_away = False

        def again(rs: tenacity.RetryCallState) -> bool:
            nonlocal went_away
            e = rs.outcome.exception() if rs.outcome is not None else None
            if isinstance(e, DaemonUnavailable):
                went_away = went_away or e.went_away
                return went_away  # nobody answered the first time: the request made nothing
            return False

        retrying = tenacity.Retrying(retry=again, stop=tenacity.stop_after_attempt(RETRY_ATTEMPTS),
                                     wait=tenacity.wait_exponential(multiplier=0.2, max=2.0), reraise=True)
        try:
            rsp = retrying(send, key)
        except DaemonUnavailable:
            if not went_away:
                raise  # nobody answered at all: nothing was asked
            # It took the request and went away before answering, and did not come back in time: the change
            # may have been made. Sent again with the same key, the request gets that change, if any.
            raise DaemonUnavailable(self.socket, f"the daemon went away while answering {method} {path} and did "
                                    f"not come back; the change may have been made: check "
                                    f"'overlord changes', or run the same command again with {KEY_ENV}={key} "
                                    "to get that change rather than a new one", went_away=True) from None
        return self.envelope(rsp, method, path)

    def _sync(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).get("result")

    # -- the API -------------------------------------------------------------------------

    def system_info(self) -> dict[str, Any]:
        """system_info returns what the daemon says about itself (version, directories, socket)."""
        result: dict[str, Any] = self._sync("GET", "/v2/system-info")
        return result

    def find(self, query: str | None = None, *, name: str | None = None,
             select: str | None = None) -> list[dict[str, Any]]:
        """find searches the store (query: names and summaries; name: that snap), or select="refresh" lists the
        installed snaps with updates."""
        params = {k: v for k, v in (("q", query), ("name", name), ("select", select)) if v is not None}
        result: list[dict[str, Any]] = self._sync("GET", "/v2/find", query=params)
        return result

    def hold(self, names: list[str], until: str) -> dict[str, Any]:
        """hold holds the auto-refresh of names (none: every snap) until an RFC 3339 time or "forever"."""
        result: dict[str, Any] = self._sync("POST", "/v2/snaps", body={"action": "hold", "snaps": names,
                                                                        "time": until})
        return result

    def unhold(self, names: list[str]) -> dict[str, Any]:
        """unhold removes the holds of names (none: the system-wide hold)."""
        result: dict[str, Any] = self._sync("POST", "/v2/snaps", body={"action": "unhold", "snaps": names})
        return result

    def changes(self, select: str = "in-progress", snap: str | None = None) -> list[dict[str, Any]]:
        """changes lists changes: select is in-progress, ready or all; snap keeps those about that snap."""
        query = {"select": select}
        if snap:
            query["for"] = snap
        result: list[dict[str, Any]] = self._sync("GET", "/v2/changes", query=query)
        return result

    def change(self, change_id: str) -> dict[str, Any]:
        """change returns one change with its tasks."""
        result: dict[str, Any] = self._sync("GET", f"/v2/changes/{_segment(change_id)}")
        return result

    def timings(self, change_id: str | None = None, ensure: str | None = None) -> list[dict[str, Any]]:
        """timings returns the runs of a change's tasks, or the kept ensure passes of a manager ("all": every one)."""
        query = {"aspect": "change-timings"}
        if change_id is not None:
            query["change-id"] = change_id
        if ensure is not None:
            query["ensure"] = ensure
        result: list[dict[str, Any]] = self._sync("GET", "/v2/debug", query=query)
        return result

    def abort(self, change_id: str) -> dict[str, Any]:
        """abort aborts an unready change and returns it."""
        result: dict[str, Any] = self._sync("POST", f"/v2/changes/{_segment(change_id)}", body={"action": "abort"})
        return result

    def retry(self, change_id: str) -> dict[str, Any]:
        """retry runs a failed change again from where it failed; it returns the change."""
        result: dict[str, Any] = self._sync("POST", f"/v2/changes/{_segment(change_id)}", body={"action": "retry"})
        return result

    def act_on_changes(self, action: str, select: dict[str, Any]) -> list[str]:
        """act_on_changes aborts or retries (action) every change select picks, in one transaction; it returns
        their ids. select: {"status": [...], "kind": [...], "age": "2h", "label": "KEY=VALUE"}."""
        result: dict[str, Any] = self._sync("POST", "/v2/changes", body={"action": action, "select": select})
        return [str(c) for c in result.get("changes", [])]

    def warnings(self, all: bool = False) -> list[dict[str, Any]]:
        """warnings lists the pending warnings, or every unexpired one with all=True."""
        result: list[dict[str, Any]] = self._sync("GET", "/v2/warnings", query={"select": "all" if all else "pending"})
        return result

    def okay(self, timestamp: datetime) -> int:
        """okay marks the warnings that were due at timestamp as shown; returns how many."""
        body = {"action": "okay", "timestamp": format_time(timestamp)}
        return int(self._sync("POST", "/v2/warnings", body=body))

    def notices(self, types: list[str] | None = None, keys: list[str] | None = None, after: str | None = None,
                timeout: float = 0.0) -> list[dict[str, Any]]:
        """notices lists the notices repeated after after (a notice's "last-repeated"), of types and keys.

        With timeout (seconds) and none matching yet, the daemon answers as
        soon as one comes, or with [] once timeout passed (a long-poll).
        """
        query: dict[str, str] = {}
        if types:
            query["types"] = ",".join(types)
        if keys:
            query["keys"] = ",".join(keys)
        if after:
            query["after"] = after
        if timeout > 0:
            query["timeout"] = f"{timeout:.3f}s"
        result: list[dict[str, Any]] = self._sync("GET", "/v2/notices", query=query,
                                                  timeout=timeout + DEFAULT_TIMEOUT)
        return result

    # -- snaps and assertions ------------------------------------------------------------

    def snaps(self, select: str = "enabled", names: list[str] | None = None) -> list[dict[str, Any]]:
        """snaps lists the installed snaps (select="all": every installed revision), of names only if given."""
        query = {"select": select}
        if names:
            query["snaps"] = ",".join(names)
        result: list[dict[str, Any]] = self._sync("GET", "/v2/snaps", query=query)
        return result

    def snap(self, name: str) -> dict[str, Any]:
        """snap returns one installed snap (ApiError snap-not-found when it is not installed)."""
        result: dict[str, Any] = self._sync("GET", f"/v2/snaps/{_segment(name)}")
        return result

    def snap_action(self, name: str, action: str, **options: Any) -> str:
        """snap_action asks for action (install, refresh, remove, revert, enable, disable) on one snap; returns the
        change id. options are the action's fields (revision=).
        """
        body = {"action": action, **{k.replace("_", "-"): v for k, v in options.items() if v is not None}}
        return str(self.change_request("POST", f"/v2/snaps/{_segment(name)}", body)["change"])

    def snaps_action(self, action: str, names: list[str], **options: Any) -> tuple[str, list[str]]:
        """snaps_action asks for action (install, refresh, remove) on several snaps in one change.

        It returns the change id and the snaps it is about (refresh of no names: those with updates).
        options are more fields ("wait-for-conflicts"=True as wait_for_conflicts=True).
        """
        body = {"action": action, "snaps": names,
                **{k.replace("_", "-"): v for k, v in options.items() if v is not None}}
        env = self.change_request("POST", "/v2/snaps", body)
        return str(env["change"]), list((env.get("result") or {}).get("snap-names") or [])

    def apps(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """apps lists the services (of SNAP or SNAP.APP names if given) with their state."""
        query = {"select": "service"}
        if names:
            query["names"] = ",".join(names)
        result: list[dict[str, Any]] = self._sync("GET", "/v2/apps", query=query)
        return result

    def service_action(self, action: str, names: list[str], *, enable: bool = False, disable: bool = False) -> str:
        """service_action starts, stops or restarts services (SNAP or SNAP.APP); returns the change id."""
        body: dict[str, Any] = {"action": action, "names": names}
        if enable:
            body["enable"] = True
        if disable:
            body["disable"] = True
        return str(self.change_request("POST", "/v2/apps", body)["change"])

    def logs(self, names: list[str] | None = None, n: int | None = 10) -> list[dict[str, str]]:
        """logs returns the last n lines (None: all) of the services' logs, as {"sid", "message"}."""
        query = {"n": "all" if n is None else str(n)}
        if names:
            query["names"] = ",".join(names)
        result: list[dict[str, str]] = self._sync("GET", "/v2/logs", query=query)
        return result

    def logs_since(self, names: list[str] | None, cursor: str) -> tuple[list[dict[str, str]], str]:
        """logs_since returns the lines written since cursor ("" at first: none) and the next cursor."""
        query = {"follow": cursor}
        if names:
            query["names"] = ",".join(names)
        result: dict[str, Any] = self._sync("GET", "/v2/logs", query=query)
        return list(result["entries"]), str(result["cursor"])

    def sideload(self, path: str | Path, *, dangerous: bool = False) -> str:
        """sideload uploads a local snap file and installs it (dangerous: without assertions); returns the change."""
        env = self.upload_request("/v2/snaps", "snap", path, {"dangerous": "true" if dangerous else "false"})
        return str(env["change"])

    def assertion_types(self) -> list[str]:
        """assertion_types lists the assertion types the daemon knows."""
        return list(self._sync("GET", "/v2/assertions")["types"])

    def known(self, type_name: str, headers: dict[str, str] | None = None) -> str:
        """known returns the stored assertions of a type whose headers match, as their text (a stream)."""
        path = f"/v2/assertions/{_segment(type_name)}"
        rsp = self.send("GET", path, query=headers or None)
        if rsp.headers.get("content-type", "").startswith("application/json"):
            self.envelope(rsp, "GET", path)  # an error envelope raises
            raise ClientError(f"cannot understand the daemon's answer to GET {path}: not an assertion stream")
        return rsp.text

    def known_json(self, type_name: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """known_json returns the matching assertions as {"headers", "body"} objects."""
        result: list[dict[str, Any]] = self._sync("GET", f"/v2/assertions/{_segment(type_name)}",
                                                  query={**(headers or {}), "json": "true"})
        return result

    def ack(self, text: bytes) -> list[dict[str, Any]]:
        """ack adds signed assertions (one or a stream), all or none; returns what was added."""
        env = self.envelope(self.send("POST", "/v2/assertions", content=text,
                                      headers={"Content-Type": "application/x.ubuntu.assertion"}),
                            "POST", "/v2/assertions")
        result: list[dict[str, Any]] = env.get("result") or []
        return result

    # -- interfaces and seeding -----------------------------------------------------------

    def connections(self, snap: str | None = None, interface: str | None = None,
                    all: bool = False) -> dict[str, Any]:
        """connections returns {"established", "undesired", "plugs", "slots"}: established connections (all:
        undesired ones and unconnected plugs and slots too), of snap and interface if given."""
        query = {"select": "all" if all else "connected"}
        if snap:
            query["snap"] = snap
        if interface:
            query["interface"] = interface
        result: dict[str, Any] = self._sync("GET", "/v2/connections", query=query)
        return result

    def interfaces(self, connected: bool = False, names: list[str] | None = None) -> list[dict[str, Any]]:
        """interfaces lists the interfaces (connected: those in use), each with its plugs and slots."""
        query = {"select": "connected" if connected else "all", "plugs": "true", "slots": "true"}
        if names:
            query["names"] = ",".join(names)
        result: list[dict[str, Any]] = self._sync("GET", "/v2/interfaces", query=query)
        return result

    def connect(self, plug_snap: str, plug: str, slot_snap: str = "", slot: str = "") -> str:
        """connect connects a plug to a slot (empty slot_snap: the system; empty slot: the one that fits); it
        returns the change id."""
        return self._interfaces("connect", plug_snap, plug, slot_snap, slot)

    def disconnect(self, plug_snap: str, plug: str, slot_snap: str = "", slot: str = "", *,
                   forget: bool = False) -> str:
        """disconnect disconnects a plug from a slot (no slot: everything of that plug or slot); it returns the
        change id. Nothing to disconnect is an ApiError of kind interfaces-unchanged."""
        return self._interfaces("disconnect", plug_snap, plug, slot_snap, slot, forget=forget)

    def _interfaces(self, action: str, plug_snap: str, plug: str, slot_snap: str, slot: str,
                    forget: bool = False) -> str:
        body: dict[str, Any] = {"action": action, "plugs": [{"snap": plug_snap, "plug": plug}],
                                "slots": [{"snap": slot_snap, "slot": slot}]}
        if forget:
            body["forget"] = True
        return str(self.change_request("POST", "/v2/interfaces", body)["change"])

    def seed_state(self) -> dict[str, Any]:
        """seed_state returns {"seeded", "change", "status"}: whether the system is seeded, and its seed change."""
        result: dict[str, Any] = self._sync("GET", "/v2/seed")
        return result

    def seed(self, path: str | Path) -> str:
        """seed seeds the system from the seed directory at path (the daemon reads it); returns the change id."""
        body = {"action": "seed", "path": str(Path(path).absolute())}
        return str(self.change_request("POST", "/v2/seed", body)["change"])

    # -- configuration and hooks -------------------------------------------------------

    def conf(self, name: str, keys: list[str] | None = None) -> dict[str, Any]:
        """conf returns options of a snap ({key: value}), or its whole document without keys ("system": the
        system's settings). A key that is not set is an ApiError of kind option-not-found."""
        query = {"keys": ",".join(keys)} if keys else None
        result: dict[str, Any] = self._sync("GET", f"/v2/snaps/{_segment(name)}/conf", query=query)
        return result

    def set_conf(self, name: str, patch: dict[str, Any]) -> str:
        """set_conf changes options of a snap ({key: value}; None unsets); returns the change id."""
        return str(self.change_request("PUT", f"/v2/snaps/{_segment(name)}/conf", patch)["change"])

    def ctl(self, context_id: str, args: list[str]) -> dict[str, Any]:
        """ctl runs `overlord ctl ARGS` for the hook whose context token is context_id: {"stdout", "stderr"}."""
        result: dict[str, Any] = self._sync("POST", "/v2/snapctl", body={"context-id": context_id, "args": args})
        return result


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def _reason(e: httpx.TransportError) -> str:
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            if cause.errno == errno.ENOENT:
                return "there is no socket (is the daemon running?)"
            if cause.errno == errno.ECONNREFUSED:
                return "connection refused (is the daemon running?)"
            if cause.errno in (errno.EACCES, errno.EPERM):
                return "permission denied"
            return cause.strerror or str(cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(e, httpx.TimeoutException):
        return "no answer in time"
    text = " ".join(str(e).split())
    return text or type(e).__name__


def parse_time(text: str) -> datetime:
    """parse_time reads an RFC 3339 time of the API."""
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def format_time(when: datetime) -> str:
    """format_time writes an aware time as the API's RFC 3339 UTC text."""
    return f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}Z"
