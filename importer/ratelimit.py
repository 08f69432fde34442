"""A thread-safe limiter: never more than R requests in any one-second window.

Why not a token bucket: a full bucket of R plus its refill lets R + ε requests through in a
window. Why not a log of *send* times either: the server sees a request when it arrives, not
when we decided to send it; two requests sent exactly one second apart can arrive closer than
that if the first one waited longer for the GIL or the socket.

So a request holds one of R slots from the moment it is allowed to go until one window after
its answer (or failure) came back. The server necessarily saw the request between those two
instants, which makes the bound hold for arrival times as the server counts them:

    if R + 1 requests arrived within [t, t + 1], each was sent before t + 1 and released
    no earlier than t + 1, so R + 1 slots were held at once at t + 1 — impossible.

With latency L, the rate reached is R / (1 + L) per second in steady state: 98 % of R at 20 ms.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class RateLimiter:
    """At most ``per_second`` requests in any one-second window, for any number of threads.

    Args:
        per_second: the limit R. A fractional R above 1 is floored (2.5/s allows 2 in any
            second, never 3); below 1 it means one request per ``1 / R`` seconds.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be greater than zero")
        self.per_second = per_second
        self.slots = max(1, math.floor(per_second))
        self.window = max(1.0, self.slots / per_second)
        self._clock = clock
        self._cond = threading.Condition()
        self._in_flight = 0
        self._released: deque[float] = deque()  # release times, oldest first

    def acquire(self) -> None:
        """Block until a request may be sent; pair every call with :meth:`release`."""
        with self._cond:
            while True:
                now = self._clock()
                while self._released and self._released[0] + self.window <= now:
                    self._released.popleft()
                if self._in_flight + len(self._released) < self.slots:
                    self._in_flight += 1
                    return
                # Wait for the oldest released slot to age out, or for a release that will.
                timeout = self._released[0] + self.window - now if self._released else None
                self._cond.wait(timeout)

    def release(self) -> None:
        """Mark the request done (answered or failed); its slot frees one window later."""
        with self._cond:
            self._in_flight -= 1
            self._released.append(self._clock())
            self._cond.notify_all()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for the duration of one request."""
        self.acquire()
        try:
            yield
        finally:
            self.release()
