# SPDX-License-Identifier: GPL-3.0-or-later
"""The closed list of error kinds the daemon answers with, and ApiError.

Every error response carries ``{"message": ..., "kind": ...}`` with a kind
from ErrorKind (docs/daemon.md lists them, with their HTTP status). A kind
is added here, with its documentation, before any endpoint answers it.
"""

from __future__ import annotations

import enum
from typing import Any

from engine import ChangeConflictError, DatabaseBusyError, DatabaseCorruptError


class ErrorKind(enum.Enum):
    """ErrorKind names what went wrong, for clients that act on it; the value is the wire string."""

    #: The request is malformed: bad JSON, a missing or mistyped field, an unknown action or query value (400).
    BAD_REQUEST = "bad-request"
    #: The request body is larger than the daemon accepts (413).
    REQUEST_TOO_LARGE = "request-too-large"
    #: The peer's credentials do not allow the request: POST needs uid 0 or the configured group (403).
    PERMISSION_DENIED = "permission-denied"
    #: No endpoint has this path (404).
    NOT_FOUND = "not-found"
    #: The endpoint does not answer this method (405).
    METHOD_NOT_ALLOWED = "method-not-allowed"
    #: No change has this id (404).
    CHANGE_NOT_FOUND = "change-not-found"
    #: The change is ready: there is nothing left to abort (400, as snapd answers).
    CHANGE_READY = "change-ready"
    #: The change cannot be retried: it is not ready, or none of its tasks failed (400).
    CHANGE_NOT_FAILED = "change-not-failed"
    #: The request would touch what an unready change touches; value names that change (409). The name is
    #: snapd's: every change of this system is about snaps or their interfaces.
    SNAP_CHANGE_CONFLICT = "snap-change-conflict"
    #: The state database stayed busy past its budget; retry later (503).
    DATABASE_BUSY = "database-busy"
    #: The connection is over the daemon's bounds (per uid, or all together); it is closed at once (503,
    #: answered by the listener before any request is read: overlord/daemon/limits.py).
    TOO_MANY_CONNECTIONS = "too-many-connections"
    STATE_DAMAGED = "state-damaged"
    #: No snap has this name: not installed (GET /v2/snaps/NAME), or not in the store (install) (404).
    SNAP_NOT_FOUND = "snap-not-found"
    #: The action needs an installed snap (or revision) and it is not installed (404; snapd answers 400).
    SNAP_NOT_INSTALLED = "snap-not-installed"
    #: Install of a snap that is installed already (400).
    SNAP_ALREADY_INSTALLED = "snap-already-installed"
    #: Refresh with nothing newer in the store (400).
    SNAP_NO_UPDATE_AVAILABLE = "snap-no-update-available"
    #: An uploaded snap file is malformed or hostile (400).
    INVALID_SNAP = "invalid-snap"
    #: A posted text is not well-formed assertions of known types (400).
    INVALID_ASSERTION = "invalid-assertion"
    #: A posted assertion does not verify: its chain to the trusted root is broken (the message names the
    #: link), or a newer revision is known (400).
    ASSERTION_REFUSED = "assertion-refused"
    #: The store cannot be read, or none is configured (502).
    STORE_ERROR = "store-error"
    #: The daemon failed in a way it did not foresee; its log has the details (500, never a traceback).
    INTERNAL_ERROR = "internal-error"
    # -- interfaces and seeding (api_interfaces.py, api_seed.py) --
    #: A disconnect found nothing to disconnect (400, snapd's kind; `overlord disconnect` says so and exits 0).
    INTERFACES_UNCHANGED = "interfaces-unchanged"
    #: The seed directory is incomplete, malformed or does not verify; the message says what is wrong (400).
    INVALID_SEED = "invalid-seed"
    #: The system is seeded already: seeding again does nothing (400).
    ALREADY_SEEDED = "already-seeded"
    # -- configuration (api_config.py) --
    #: The snap has no such configuration option (400, snapd's kind).
    OPTION_NOT_FOUND = "option-not-found"
    #: The system waits for its seeding (the daemon was given a seed): snapd's "too early for operation, device
    #: not yet seeded"; value {"change-kind": "seed"}; try again once seeded (409).
    TOO_EARLY = "too-early"


class ApiError(Exception):
    """ApiError is an error answer: an HTTP status, a kind, a one-line message and an optional value."""

    def __init__(self, status: int, kind: ErrorKind, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.value = value

    def result(self) -> dict[str, Any]:
        """result returns the error object of the envelope."""
        out: dict[str, Any] = {"message": self.message, "kind": self.kind.value}
        if self.value is not None:
            out["value"] = self.value
        return out


def bad_request(message: str) -> ApiError:
    """bad_request is a 400 ApiError of kind bad-request."""
    return ApiError(400, ErrorKind.BAD_REQUEST, message)


#: SHOWN_WHOLE is the longest text a client sent that an error message quotes whole (a longer one: its start).
SHOWN_WHOLE = 40


def shown(text: object, quote: bool = True) -> str:
    """shown quotes text a client sent for an error message: whole (repr) up to SHOWN_WHOLE characters, else
    its first 20 and its length, so that a message stays one short line whatever was sent. quote=False: a
    path, shown without quotes. What is not a str (a number, a list in a field for text) is shown as its repr."""
    if not isinstance(text, str):
        return shown(repr(text), quote=False)
    if len(text) <= SHOWN_WHOLE:
        return repr(text) if quote else text
    return f"{text[:20]!r}... ({len(text)} characters)" if quote else f"{text[:20]}... ({len(text)} characters)"


def change_not_found(change_id: str) -> ApiError:
    """change_not_found is the 404 for an unknown change id (a long one shown by its start and its length)."""
    return ApiError(404, ErrorKind.CHANGE_NOT_FOUND, f"cannot find change with id {shown(change_id)}")


def permission_denied(message: str) -> ApiError:
    """permission_denied is the 403 for a caller whose credentials do not allow the request."""
    return ApiError(403, ErrorKind.PERMISSION_DENIED, message)


def from_exception(e: BaseException) -> ApiError | None:
    """from_exception maps an engine exception that clients should see to its ApiError (None: a bug)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, ChangeConflictError):
        value = {"change-id": e.change_id}
        if e.change_kind:
            value["change-kind"] = e.change_kind
        return ApiError(409, ErrorKind.SNAP_CHANGE_CONFLICT, str(e), value)
    if isinstance(e, DatabaseBusyError):
        return ApiError(503, ErrorKind.DATABASE_BUSY, " ".join(str(e).split()))
    if isinstance(e, DatabaseCorruptError):
        return ApiError(500, ErrorKind.STATE_DAMAGED, " ".join(str(e).split()))
    for cls, status, kind in _manager_errors():
        if isinstance(e, cls):
            return ApiError(status, kind, " ".join(str(e).split()),
                            {"change-kind": "seed"} if kind is ErrorKind.TOO_EARLY else None)
    return None


def _manager_errors() -> list[tuple[type[BaseException], int, ErrorKind]]:
    """_manager_errors maps the managers' errors that clients should see to a status and a kind."""
    try:
        from managers import errors as m
    except ImportError:  # a daemon of another overlord, installed without the snap system
        return []

    return [
        (m.SnapNotFoundError, 404, ErrorKind.SNAP_NOT_FOUND),
        (m.SnapNotInstalledError, 404, ErrorKind.SNAP_NOT_INSTALLED),
        (m.SnapAlreadyInstalledError, 400, ErrorKind.SNAP_ALREADY_INSTALLED),
        (m.NoUpdateAvailableError, 400, ErrorKind.SNAP_NO_UPDATE_AVAILABLE),
        (m.SnapOperationError, 400, ErrorKind.BAD_REQUEST),
        (m.InvalidSnapError, 400, ErrorKind.INVALID_SNAP),
        (m.InvalidAssertionError, 400, ErrorKind.INVALID_ASSERTION),
        (m.AssertionVerifyError, 400, ErrorKind.ASSERTION_REFUSED),
        (m.AssertionRevisionError, 400, ErrorKind.ASSERTION_REFUSED),
        (m.StoreError, 502, ErrorKind.STORE_ERROR),
        (m.NotConnectedError, 400, ErrorKind.INTERFACES_UNCHANGED),  # before InterfaceError, its base
        (m.InterfaceError, 400, ErrorKind.BAD_REQUEST),
        (m.InvalidSeedError, 400, ErrorKind.INVALID_SEED),
        (m.AlreadySeededError, 400, ErrorKind.ALREADY_SEEDED),
        (m.NoOptionError, 400, ErrorKind.OPTION_NOT_FOUND),  # before ConfigError, its base
        (m.ConfigError, 400, ErrorKind.BAD_REQUEST),
        (m.TooEarlyError, 409, ErrorKind.TOO_EARLY),
    ]
