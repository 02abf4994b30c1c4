"""Waiting out IAM grants that a fresh `pulumi up` made and that have not reached IAP, OS Login or the APIs yet.

Google says a new grant takes effect in about two minutes, at worst seven. Meanwhile the first `offload run` meets
IAP's 4033, a refused OS Login, or a 403 of the Compute or Workstations API about the worker. Within FRESH_SECONDS
of the stack's `deployed_at` (the time the last `pulumi up` ran the program, in its outputs) those denials are
retried with backoff for up to WAIT_SECONDS, after one line that says so; any other failure, and any denial of a
stack deployed longer ago, fails as it would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from offload.errors import AuthFailed, CloudPermissionDenied, IapDenied, OffloadError

T = TypeVar("T")

WAIT_SECONDS = 300.0
# A stack deployed this long ago has grants that reached everything (Google's worst case is seven minutes).
FRESH_SECONDS = 600.0
NOTICE = "waiting for new IAM grants to take effect (up to 5 min)"
FIRST_DELAY = 2.0
MAX_DELAY = 20.0


def is_grant_denial(e: OffloadError) -> bool:
    """E is what a grant that has not propagated yet looks like: a refused API call, IAP's 4033, or a refused
    OS Login (a login of a GCE worker whose key OS Login holds)."""
    return isinstance(e, (CloudPermissionDenied, IapDenied, AuthFailed))


@dataclass
class GrantWait:
    """Retries of grant denials for a stack deployed DEPLOYED_AGO seconds ago (None: unknown, so never retried).
    CLOCK and SLEEP are the runtime's own unless a test gives its own."""

    deployed_ago: float | None
    notice: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    budget: float = WAIT_SECONDS
    retries: int = field(default=0, init=False)

    @property
    def fresh(self) -> bool:
        return self.deployed_ago is not None and self.deployed_ago < FRESH_SECONDS

    def run(self, attempt: Callable[[], T], *, denial: Callable[[OffloadError], bool] = is_grant_denial) -> T:
        """ATTEMPT's value; a DENIAL of a fresh stack is retried, with doubling pauses, until BUDGET is spent."""
        deadline: float | None = None
        delay = FIRST_DELAY
        while True:
            try:
                return attempt()
            except OffloadError as e:
                if not self.fresh or not denial(e):
                    raise
                now = self.clock()
                if deadline is None:
                    deadline = now + self.budget
                    self.notice(NOTICE)
                if now >= deadline:
                    raise
                self.sleep(min(delay, deadline - now))
                self.retries += 1
                delay = min(delay * 2, MAX_DELAY)
