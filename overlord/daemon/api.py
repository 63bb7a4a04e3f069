# SPDX-License-Identifier: GPL-3.0-or-later
"""How endpoints are declared and served: Endpoint, Context, ApiRequest, and the ASGI app.

Each resource lives in a module of its own (api_changes.py, api_warnings.py,
...) holding ENDPOINTS, a list of Endpoint. An Endpoint maps a path to one
plain function per method: ``handler(ctx, req) -> Reply``. Handlers are
thin: they parse the request through ApiRequest (whose errors are 400s),
call the engine or a manager under the state lock, and answer with
response.sync / response.async_. They run in a worker thread, so taking the
state lock never blocks the event loop. A handler may instead be an async
function (GET /v2/notices, whose long-poll must hold no thread): it runs on
the event loop and must not block it. Everything around them (the body
size limit, the access check, turning errors into the envelope, never a
traceback) happens here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import response
from .access import AccessPolicy, PeerCred
from .errors import ApiError, ErrorKind, bad_request, from_exception, permission_denied, shown
from .idempotency import ChangeRequest
from .upload import Upload, is_form, receive_form

if TYPE_CHECKING:
    from engine import Overlord, State

log = logging.getLogger("overlord.daemon")

#: MAX_BODY is the largest request body accepted, in bytes (larger: 413 request-too-large).
MAX_BODY = 1024 * 1024
#: PEER_CRED_KEY is where the server puts the connection's PeerCred in the ASGI scope's extensions.
PEER_CRED_KEY = "overlord.peer_cred"

Handler = Callable[["Context", "ApiRequest"], "response.Reply | Awaitable[response.Reply]"]


@dataclass(frozen=True)
class Endpoint:
    """Endpoint is one path of the API and the handler of each method it answers."""

    path: str
    get: Handler | None = None
    post: Handler | None = None
    #: The handler of a POST whose body is a multipart/form-data upload (streamed to a file: ApiRequest.upload),
    #: beside post, which answers the other POSTs.
    upload: Handler | None = None
    put: Handler | None = None
    #: Whether any local user may POST or PUT here (the handler decides, from what the request holds: a hook's
    #: context token for /v2/snapctl); otherwise they need the access policy's write right.
    any_user: bool = False

    def methods(self) -> dict[str, Handler]:
        """methods maps each answered HTTP method to its handler."""
        out = {}
        if self.get is not None:
            out["GET"] = self.get
        if self.post is not None:
            out["POST"] = self.post
        if self.put is not None:
            out["PUT"] = self.put
        return out


@dataclass
class Context:
    """Context is the daemon as its endpoints see it: the overlord, the access rules, facts about it."""

    overlord: Overlord
    policy: AccessPolicy = field(default_factory=AccessPolicy)
    #: What GET /v2/system-info tells: version, directories, socket.
    info: dict[str, Any] = field(default_factory=dict)
    #: Where uploads are received (endpoints with an upload handler); None: they are refused.
    upload_dir: Path | None = None
    #: What GET /v2/system-info tells about connections (open, bounds, refused), when the server counts them.
    connections: Callable[[], dict[str, Any]] | None = None

    @property
    def state(self) -> State:
        """state is the overlord's State; take its lock around every use."""
        return self.overlord.state


#: The header a client names a request that makes a change by: sent again with a retried request, it
#: gets the change the first one made (engine.State.new_change(key=...), docs/daemon.md).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: MAX_KEY is the longest key a request may name, in characters: an Idempotency-Key, an event's key.
MAX_KEY = 200


class ApiRequest:
    """ApiRequest is what a handler sees of a request; its parsing errors are 400 ApiErrors."""

    def __init__(self, method: str, path: str, path_params: Mapping[str, str], query: Mapping[str, str],
                 body: bytes, peer: PeerCred | None, upload: Upload | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        #: The request's headers (names in lower case).
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.method = method
        self.path = path
        self.path_params = dict(path_params)
        self.query = query
        self.body = body
        self.peer = peer
        #: The received form, for a multipart/form-data POST to an endpoint that takes uploads.
        self.upload = upload

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        """choice returns query parameter name, which must be one of choices (default when absent)."""
        value = self.query.get(name) or default
        if value not in choices:
            raise bad_request(f"invalid {name} parameter {shown(value)}: it must be one of {', '.join(choices)}")
        return value

    def change_key(self) -> str | None:
        """change_key is the idempotency key of a request that makes a change: its Idempotency-Key header,
        scoped to the caller's uid (one user cannot reach another's change), or None without the header."""
        value = self.headers.get(IDEMPOTENCY_HEADER.lower())
        if value is None:
            return None
        if not value or len(value) > MAX_KEY or not value.isascii() or not value.isprintable():
            # HTTP headers arrive as Latin-1: a UTF-8 header is shown as the text it was, not as mojibake
            text = value.encode("latin-1", "replace").decode("utf-8", "backslashreplace")
            raise bad_request(f"invalid {IDEMPOTENCY_HEADER} header {shown(text)}: it must be 1 to {MAX_KEY} "
                              "printable ASCII characters")
        uid = self.peer.uid if self.peer is not None else "?"
        return f"api:{uid}:{value}"

    def change_request(self, what: str, request: Any) -> ChangeRequest:
        """change_request is this request as one that makes a change: what it does (a verb) and what it asks
        (JSON, equal for requests that ask the same), with its Idempotency-Key (idempotency.py)."""
        return ChangeRequest(self.change_key(), self.headers.get(IDEMPOTENCY_HEADER.lower()), what, request)

    def json(self) -> Body:
        """json parses the body as a JSON object."""
        if not self.body.strip():
            raise bad_request("cannot decode request body: it is empty (a JSON object is expected)")
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("cannot decode request body: it is not UTF-8 text") from None
        try:
            value = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int, parse_float=_finite_float)
        except json.JSONDecodeError as e:
            raise bad_request(f"cannot decode request body: invalid JSON: {e.msg} at line {e.lineno} "
                              f"column {e.colno}") from None
        except RecursionError:
            raise bad_request("cannot decode request body: JSON nested too deeply") from None
        except ValueError as e:  # from the three hooks: a number out of bounds, NaN, Infinity, 1e999
            raise bad_request(f"cannot decode request body: {e}") from None
        if not isinstance(value, dict):
            raise bad_request(f"cannot decode request body: a JSON object is expected, not {_json_type(value)}")
        try:  # "\udc80" escapes decode to lone surrogates: not text, and nothing can store them
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("cannot decode request body: a string holds a lone UTF-16 surrogate") from None
        return Body(value)


class Body:
    """Body reads the fields of a JSON request object, with 400s that name the field."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value

    def _get(self, name: str, kind: type, what: str, required: bool) -> Any:
        if name not in self.value or self.value[name] is None:
            if required:
                raise bad_request(f"cannot decode request body: missing field {name!r}")
            return None
        v = self.value[name]
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
            raise bad_request(f"cannot decode request body: field {name!r} must be {what}, not {_json_type(v)}")
        return v

    def string(self, name: str) -> str:
        """string returns a required string field."""
        return str(self._get(name, str, "a string", True))

    def opt_string(self, name: str) -> str | None:
        """opt_string returns an optional string field (None when absent or null)."""
        v = self._get(name, str, "a string", False)
        return None if v is None else str(v)

    def key(self, name: str) -> str:
        """key returns a required string field naming a key: at most MAX_KEY characters."""
        value = self.string(name)
        if len(value) > MAX_KEY:
            raise bad_request(f"cannot decode request body: field {name!r} is longer than {MAX_KEY} characters "
                              f"({len(value)})")
        return value

    def flag(self, name: str, what: str = "true or false") -> bool:
        """flag returns an optional boolean field (False when absent or null); what names a boolean in the
        error for another type."""
        return bool(self._get(name, bool, what, False))

    def str_list(self, name: str, required: bool = True) -> list[str]:
        """str_list returns a list-of-strings field ([] when optional and absent)."""
        v = self._get(name, list, "a list of strings", required)
        if v is None:
            return []
        if not all(isinstance(x, str) for x in v):
            raise bad_request(f"cannot decode request body: field {name!r} must be a list of strings")
        return list(v)

    def action(self, choices: Sequence[str] | Mapping[str, Sequence[str]]) -> str:
        """action returns the "action" field, which must be one of choices. When choices maps each action to
        the fields it takes besides "action", any other field is refused too."""
        action = self.string("action")
        if action not in choices:
            raise bad_request(f"unknown action {shown(action)}: it must be {' or '.join(repr(c) for c in choices)}")
        if isinstance(choices, Mapping):
            for key in self.value:
                if key != "action" and key not in choices[action]:
                    raise bad_request(f"cannot decode request body: field {shown(key)} is not an option of {action}")
        return action

    def text(self, name: str, *, valid: Callable[[str], bool] | None = None, what: str = "",
             numbers: bool = False, needed_by: Sequence[str] = ()) -> str | None:
        """text returns an optional text field (None when absent or null): any non-empty string, or one that
        valid accepts (what says which in the error). numbers: a JSON number is taken for its digits too (a
        revision); needed_by: the actions that cannot go without the field."""
        value = self.value.get(name)
        if value is None:
            if (action := self.value.get("action")) in needed_by:
                raise bad_request(f"cannot {action}: field {name!r} is missing")
            return None
        kinds = (str, int) if numbers else str
        if isinstance(value, bool) or not isinstance(value, kinds) or not (value or valid):
            raise bad_request(f"cannot decode request body: field {name!r} must be "
                              f"{'a string or a number' if numbers else 'a non-empty string'}")
        text = str(value)
        if valid is not None and not valid(text):
            shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
            raise bad_request(f"cannot decode request body: field {name!r} must be {what}, not {shown!r}")
        return text

    def time(self, name: str) -> datetime:
        """time returns a required RFC 3339 time field with a time zone."""
        text = self.string(name)
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise bad_request(f"cannot decode request body: field {name!r} is not an RFC 3339 time: "
                              f"{shown(text)}") from None
        if when.tzinfo is None:
            raise bad_request(f"cannot decode request body: field {name!r} has no time zone: {shown(text)}")
        try:  # 0001-01-01T00:00:00+14:00 is a time Python cannot write in UTC, nor compare with one
            return when.astimezone(UTC)
        except OverflowError:
            raise bad_request(f"cannot decode request body: field {name!r} is out of range: {shown(text)}") from None


#: MAX_JSON_DIGITS is the longest integer a request body may hold: 64-bit integers have at most 20 digits.
MAX_JSON_DIGITS = 20


def _bounded_int(text: str) -> int:
    """_bounded_int reads a JSON integer of at most MAX_JSON_DIGITS digits (longer ones cost time, and no field
    takes them)."""
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise ValueError(f"a number has {len(text.lstrip('-'))} digits (at most {MAX_JSON_DIGITS})")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (not JSON)")


def _finite_float(text: str) -> float:
    """_finite_float reads a JSON number with a fraction or an exponent, refusing one beyond a float's range
    (1e999 would be read as infinity): in any field, read by the endpoint or not, as NaN and Infinity are."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text if len(text) <= 40 else text[:20] + '...'} (out of range)")
    return value


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    return "an object"


# -- serving -------------------------------------------------------------------------


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> ApiError:
    return ApiError(413, ErrorKind.REQUEST_TOO_LARGE, f"cannot read request body: it is larger than {MAX_BODY} bytes")


def _serve(ctx: Context, handler: Handler, req: ApiRequest) -> Response:
    """_serve runs a handler in a worker thread and turns whatever happens into the envelope."""
    try:
        reply = cast(response.Reply, handler(ctx, req))  # a sync handler (async ones: _serve_async)
    except Exception as e:
        reply = _failed(req, e)
    return _finish(ctx, reply, req)


async def _serve_async(ctx: Context, handler: Handler, req: ApiRequest) -> Response:
    """_serve_async awaits an async handler on the event loop, then envelopes its reply in a worker thread."""
    try:
        result = handler(ctx, req)
        reply = await result if inspect.isawaitable(result) else result
    except Exception as e:
        reply = _failed(req, e)
    done: Response = await anyio.to_thread.run_sync(_finish, ctx, reply, req)
    return done


def _failed(req: ApiRequest, e: Exception) -> response.Reply:
    err = from_exception(e)
    if err is None:
        log.error("internal error: %s %s failed", req.method, shown(req.path, False), exc_info=e)
        err = ApiError(500, ErrorKind.INTERNAL_ERROR,
                       f"internal error: cannot answer {req.method} {shown(req.path, False)} (the daemon's log has "
                       "details)")
    return response.error(err)


def _finish(ctx: Context, reply: response.Reply, req: ApiRequest) -> Response:
    """_finish is the reply's HTTP response, with the pending warnings' count (needs the state lock).

    A reply naming a change the request started is logged, with who asked.
    """
    count, latest = 0, None
    try:
        with ctx.state:
            if reply.change is not None:
                _log_started(ctx.state, reply.change, req.peer)
            pending = ctx.state.warnings()
        if pending:
            count, latest = len(pending), max(w.last_added for w in pending)
    except Exception:
        log.exception("cannot count pending warnings")
    return reply.response(count, latest)


def _log_started(st: State, change_id: str, peer: PeerCred | None) -> None:
    """_log_started says which change a request started, of which kind, for whom (call with the lock held)."""
    chg = st.change(change_id)
    kind = chg.kind if chg is not None else "?"
    who = f"uid {peer.uid}" if peer is not None else "a caller whose credentials cannot be read"
    log.info("started change %s (%s) for %s", change_id, kind, who)


def _endpoint(ctx: Context, method_handlers: dict[str, Handler], uploads: Handler | None = None,
              any_user: bool = False) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        handler = method_handlers.get(request.method) or method_handlers["GET"]  # HEAD is GET without a body
        peer: PeerCred | None = request.scope.get("extensions", {}).get(PEER_CRED_KEY)
        upload: Upload | None = None
        try:
            writes = request.method in ("POST", "PUT")
            if writes and not any_user and not ctx.policy.may_write(peer):
                who = f"uid {peer.uid}" if peer is not None else "a caller whose credentials cannot be read"
                raise permission_denied(f"access denied: {request.method} {shown(request.url.path, False)} needs "
                                        f"{ctx.policy.describe()} ({who})")
            body = b""
            if request.method == "POST" and uploads is not None and ctx.upload_dir is not None and is_form(request):
                upload = await receive_form(request, ctx.upload_dir)
                handler = uploads
            elif writes:
                body = await _read_body(request)
        except ApiError as e:
            return response.error(e).response()
        except ClientDisconnect:  # it went away before its body was read: nothing to do, nobody to tell
            log.debug("%s %s: the client went away before sending its body", request.method, request.url.path)
            return Response(status_code=499)  # nobody reads it
        req = ApiRequest(request.method, request.url.path, request.path_params, request.query_params, body, peer,
                         upload, request.headers)
        try:
            if inspect.iscoroutinefunction(handler):
                result = await _unless_disconnected(request, _serve_async(ctx, handler, req))
            else:
                result = await anyio.to_thread.run_sync(_serve, ctx, handler, req)
        finally:
            if upload is not None:
                upload.discard()
        return result

    return endpoint


async def _unless_disconnected(request: Request, serving: Awaitable[Response]) -> Response:
    """_unless_disconnected awaits an async handler's answer, and cancels it when the client goes away first.

    A long-poll (GET /v2/notices?timeout=24h) whose client left, a closed
    browser tab or an interrupted `overlord watch`, stops waiting at once
    instead of holding its notice waiter (woken at every commit) until its
    timeout, and a daemon asked to stop need not wait for it. Only for GET
    handlers, whose request has no body left to read: what receive() says
    next is the disconnection.
    """
    work = asyncio.ensure_future(serving)
    if request.method not in ("GET", "HEAD"):
        return await work
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request cancelled (the server's stop): its handler with it
        work.cancel()
        raise
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        log.debug("%s %s: the client went away before the answer", request.method, request.url.path)
        return Response(status_code=499)  # nobody reads it
    return work.result()


async def _disconnected(request: Request) -> None:
    """_disconnected returns once the client of a request without a body has gone away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        err = ApiError(404, ErrorKind.NOT_FOUND, f"cannot find endpoint {shown(request.url.path)}")
    elif status == 405:
        err = ApiError(405, ErrorKind.METHOD_NOT_ALLOWED,
                       f"method {shown(request.method, False)} is not allowed on {shown(request.url.path)}")
    else:
        log.error("internal error: %s %s: %s", request.method, shown(request.url.path, False), exc)
        err = ApiError(500, ErrorKind.INTERNAL_ERROR, f"internal error: cannot answer {request.method} "
                       f"{shown(request.url.path, False)} (the daemon's log has details)")
    return response.error(err).response()


def build_app(ctx: Context, endpoints: Sequence[Endpoint], extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """build_app makes the ASGI application serving endpoints for ctx (and extra_routes: the web view's pages)."""
    routes: list[BaseRoute] = [Route(ep.path, _endpoint(ctx, ep.methods(), ep.upload, ep.any_user),
                                     methods=list(ep.methods())) for ep in endpoints]
    routes.extend(extra_routes)
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _http_error})
