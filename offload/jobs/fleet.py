"""Across a stack's workers: concurrent fan-out, picking where a job runs, finding where a job lives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Sequence, TypeVar

from offload.errors import JobNotFound, OffloadError, UsageError
from offload.outputs import StackOutputs
from offload.jobs.state import State
from offload.jobs.worker import WorkerJobs
from offload.providers import Meters, ProviderOptions, SshEntry, WorkerProvider, provider_for, unmetered

T = TypeVar("T")
__all__ = ["Fleet", "Outcome", "Reach", "SshEntry", "quiet"]
MAX_PARALLEL = 32


def _parallelism() -> int:
    """How many workers are queried at once: OFFLOAD_PARALLEL, default MAX_PARALLEL."""
    import os

    try:
        return max(1, int(os.environ.get("OFFLOAD_PARALLEL", MAX_PARALLEL)))
    except ValueError:
        return MAX_PARALLEL


def quiet(message: str) -> None:
    """A progress callback that shows nothing."""


@dataclass
class Reach:
    """How a session reaches its workers: the SSH identity, IAP for GCE, where progress goes, and whether an
    unknown host key is refused."""

    identity: Path | None = None
    via_iap: bool = False
    progress: Callable[[str], None] = quiet
    meters: Meters = unmetered  # counts the bytes of each transfer (a sync, a pull, a get) for a display
    strict_host_keys: bool = False

    def options(self) -> ProviderOptions:
        return ProviderOptions.from_env(self.identity, via_iap=self.via_iap, progress=self.progress,
                                        strict_host_keys=self.strict_host_keys)


@dataclass
class Outcome(Generic[T]):
    """One worker's answer: a value or the error that stopped it (a Group-style result)."""

    provider: WorkerProvider
    value: T | None = None
    error: OffloadError | None = None


class Fleet:
    """The providers for a stack's workers; each opens at most one connection during an invocation."""

    def __init__(self, outputs: StackOutputs, reach: Reach | ProviderOptions | None = None,
                 only: str | None = None, *, providers: Sequence[WorkerProvider] | None = None) -> None:
        """The workers of OUTPUTS (only ONLY, when given), reached as REACH says; or, with PROVIDERS, a fleet of
        those providers, already made (a part of another fleet)."""
        self.outputs = outputs
        if providers is None:
            options = reach.options() if isinstance(reach, Reach) else reach
            records = [outputs.worker(only)] if only else list(outputs.workers)
            providers = [provider_for(outputs, r, options) for r in records]
        self.providers = list(providers)

    def each(self, fn: Callable[[WorkerProvider], T]) -> list[Outcome[T]]:
        """Run FN for every worker concurrently; collect values and errors instead of stopping at the first."""

        def one(p: WorkerProvider) -> Outcome[T]:
            try:
                return Outcome(p, fn(p))
            except OffloadError as e:
                return Outcome(p, error=e)

        limit = _parallelism()
        if len(self.providers) == 1 or limit == 1:
            return [one(p) for p in self.providers]
        with ThreadPoolExecutor(max_workers=min(limit, len(self.providers))) as pool:
            return list(pool.map(one, self.providers))

    def close(self) -> None:
        for p in self.providers:
            p.close()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def named(self, name: str) -> WorkerProvider:
        """The worker called NAME; a config error naming the workers there are when there is none."""
        for p in self.providers:
            if p.name == name:
                return p
        self.outputs.worker(name)  # raises, naming this stack's workers
        raise UsageError(f"worker {name} is not one this session uses; it uses "
                         f"{', '.join(p.name for p in self.providers)}")

    def revive(self, *, probe: bool = False) -> None:
        """Drop every connection that has died (with PROBE: that does not answer a round trip), concurrently."""
        self.each(lambda p: p.revive(probe=probe))

    def pick(self) -> WorkerProvider:
        """The running worker with the fewest running jobs; a stopped one only when none is running."""
        if len(self.providers) == 1:
            return self.providers[0]
        states = self.each(lambda p: p.get_status().state)
        running = [o.provider for o in states if o.value in ("running", "unknown")]
        if not running:
            stopped = [o.provider for o in states if o.value in ("stopped", "stopping")]
            if stopped:
                return stopped[0]
            errors = "; ".join(o.error.line() for o in states if o.error)
            raise UsageError(f"no worker of this stack is available{': ' + errors if errors else ''}",
                             hint="see `offload status`")

        def load(p: WorkerProvider) -> int:
            return sum(1 for j in WorkerJobs(p).jobs() if j.state is State.RUNNING)

        loads = [o for o in Fleet(self.outputs, providers=running).each(load) if o.error is None]
        if not loads:
            return running[0]
        return min(loads, key=lambda o: o.value or 0).provider

    def find_job(self, job_id: str) -> WorkerProvider:
        """The worker that holds JOB_ID."""
        if len(self.providers) == 1:
            return self.providers[0]
        found = self.each(lambda p: any(j.id == job_id for j in WorkerJobs(p).jobs([job_id])))
        for o in found:
            if o.value:
                return o.provider
        unasked = [o.error.message for o in found if o.error]
        if unasked:
            raise JobNotFound(f"no job {job_id} on the workers that answered; {'; '.join(unasked)}",
                              hint="see `offload status`")
        raise JobNotFound(f"no job {job_id} on any worker of this stack", hint="see `offload status`")
