# SPDX-License-Identifier: GPL-3.0-or-later
"""EnsureRecorder: what a TaskRunner under test asks of the Overlord it runs without."""

from __future__ import annotations

import threading


class EnsureRecorder:
    """EnsureRecorder stands in for the Overlord: it records ensure_before requests."""

    def __init__(self) -> None:
        self.requests: list[float] = []
        self.event = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, delay: float) -> None:
        with self._lock:
            self.requests.append(delay)
        self.event.set()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.event.clear()

    @property
    def earliest(self) -> float | None:
        with self._lock:
            return min(self.requests) if self.requests else None
