# SPDX-License-Identifier: GPL-3.0-or-later
"""The JSON envelope of every answer: sync, async and error, in snapd's shape.

    {"type": "sync", "status-code": 200, "status": "OK", "result": ...}
    {"type": "async", "status-code": 202, "status": "Accepted", "result": ..., "change": "7"}
    {"type": "error", "status-code": 404, "status": "Not Found",
     "result": {"message": "cannot find change with id \\"9\\"", "kind": "change-not-found"}}

Answers also carry "warning-count" and "warning-timestamp" when warnings are
pending, as snapd's do, so that clients can say so.
"""

from __future__ import annotations

import http
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.responses import Response

from ..changeinfo import timestamp
from .errors import ApiError

__all__ = ["Reply", "async_", "error", "sync", "timestamp"]


@dataclass
class Reply:
    """Reply is what an endpoint answers, before it is put on the wire."""

    type: str
    status: int
    result: Any
    change: str | None = None

    def envelope(self) -> dict[str, Any]:
        """envelope returns the JSON object sent to the client."""
        out: dict[str, Any] = {"type": self.type, "status-code": self.status,
                               "status": http.HTTPStatus(self.status).phrase, "result": self.result}
        if self.change is not None:
            out["change"] = self.change
        return out

    def response(self, warning_count: int = 0, warning_timestamp: datetime | None = None) -> Response:
        """response renders the reply as a Starlette response, with the pending warnings' count."""
        body = self.envelope()
        if warning_count:
            body["warning-count"] = warning_count
            body["warning-timestamp"] = timestamp(warning_timestamp)
        # ASCII with \u escapes: valid JSON whatever the stored text holds (even a lone surrogate).
        return Response(json.dumps(body, separators=(",", ":")), status_code=self.status,
                        media_type="application/json")


def sync(result: Any, status: int = 200) -> Reply:
    """sync is an answer whose result is complete."""
    return Reply("sync", status, result)


def async_(change_id: str, result: Any = None) -> Reply:
    """async_ is a 202 answer naming the change that does the work."""
    return Reply("async", 202, result, change=change_id)


def error(err: ApiError) -> Reply:
    """error is the answer for an ApiError."""
    return Reply("error", err.status, err.result())

