"""Fault injection: added latency, failures before and after storing, and a rate limit.

The knobs live in one frozen :class:`Faults` value; :class:`FaultInjector` draws from a
``random.Random(seed)`` so that a failing test can be replayed with the same seed (for
requests sent one after another; concurrent requests draw in arrival order).
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# What a fault decision can be; None means "no fault".
BEFORE_STORE = ("503", "429")
AFTER_STORE = ("500", "drop")


@dataclass(frozen=True)
class Faults:
    """The fault knobs (all off by default).

    Attributes:
        latency_ms: added to every API request (not to ``/_sandbox/*``) before it is handled.
        fail_503: share (0..1) of eligible requests answered 503 before anything is stored.
        fail_429: share (0..1) of eligible requests answered 429 before anything is stored.
        retry_after: seconds sent in ``Retry-After`` with the injected 503/429 and the rate
            limit's 429; None sends no header (Eve sends none).
        fail_500_after_store: share of eligible requests answered 500 (HTML body) *after* the
            record was stored and the case updated.
        drop_after_store: share of eligible requests whose connection is aborted without any
            response *after* the record was stored.
        rate_limit: more than this many eligible requests in any one-second window get 429
            ``Rate limit exceeded``; None or 0 means no limit.
        faults_on_gets: also apply the shares and the rate limit to GETs of the collections
            (never to the login or admin endpoints).
        seed: seed of the random draws; None seeds from the OS.
    """

    latency_ms: float = 0.0
    fail_503: float = 0.0
    fail_429: float = 0.0
    retry_after: float | None = None
    fail_500_after_store: float = 0.0
    drop_after_store: float = 0.0
    rate_limit: int | None = None
    faults_on_gets: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("fail_503", "fail_429", "fail_500_after_store", "drop_after_store"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")
        if self.fail_503 + self.fail_429 > 1.0:
            raise ValueError("fail_503 + fail_429 must not exceed 1")
        if self.fail_500_after_store + self.drop_after_store > 1.0:
            raise ValueError("fail_500_after_store + drop_after_store must not exceed 1")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, got {self.latency_ms!r}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must not be negative, got {self.retry_after!r}")
        if self.rate_limit is not None and self.rate_limit < 0:
            raise ValueError(f"rate_limit must not be negative, got {self.rate_limit!r}")

    def updated(self, changes: dict[str, Any]) -> Faults:
        """Return a copy with some knobs changed, checking names and types.

        Args:
            changes: knob name → new value (JSON types: numbers, bool, null).

        Returns:
            The new Faults.

        Raises:
            ValueError: an unknown knob, a wrong type or an out-of-range value.
        """
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault knob {name!r}; known: {', '.join(known)}")
            clean[name] = _coerce(name, value)
        return replace(self, **clean)

    def as_dict(self) -> dict[str, Any]:
        """The knobs as a JSON-ready dict."""
        return asdict(self)


def _coerce(name: str, value: Any) -> Any:
    if name == "faults_on_gets":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if value is None and name in ("retry_after", "rate_limit", "seed"):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if name in ("rate_limit", "seed"):
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


class FaultInjector:
    """Draws fault decisions for eligible requests; used only on the server's event loop."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._window: deque[float] = deque()

    def configure(self, faults: Faults) -> None:
        """Switch to new knobs; a changed seed restarts the random sequence."""
        if faults.seed != self.faults.seed:
            self._rng = random.Random(faults.seed)
        self.faults = faults

    def reseed(self) -> None:
        """Restart the random sequence and the rate-limit window (used by reset)."""
        self._rng = random.Random(self.faults.seed)
        self._window.clear()

    def rate_limited(self, now: float | None = None) -> bool:
        """Whether this request exceeds the per-second limit (accepted ones are counted)."""
        limit = self.faults.rate_limit
        if not limit:
            return False
        now = time.monotonic() if now is None else now
        while self._window and now - self._window[0] >= 1.0:
            self._window.popleft()
        if len(self._window) >= limit:
            return True
        self._window.append(now)
        return False

    def before_store(self) -> str | None:
        """'503', '429' or None; one draw per eligible request, so sequences replay."""
        draw = self._rng.random()
        if draw < self.faults.fail_503:
            return "503"
        if draw < self.faults.fail_503 + self.faults.fail_429:
            return "429"
        return None

    def after_store(self) -> str | None:
        """'500', 'drop' or None; one draw per stored record."""
        draw = self._rng.random()
        if draw < self.faults.fail_500_after_store:
            return "500"
        if draw < self.faults.fail_500_after_store + self.faults.drop_after_store:
            return "drop"
        return None
