"""The fleet on its own: made from a stack's outputs, or from providers another fleet already made."""

from __future__ import annotations

from offload.jobs.fleet import Fleet
from offload.outputs import ProviderType, StackOutputs, WorkerRecord


def _outputs() -> StackOutputs:
    records = tuple(WorkerRecord(name=f"w{i}", host=f"10.0.0.{i}", workspace="/w") for i in (1, 2, 3))
    return StackOutputs(ProviderType.SSH, "dev@example.com", records)


def test_a_fleet_is_every_worker_of_the_outputs_or_the_one_named() -> None:
    assert [p.name for p in Fleet(_outputs()).providers] == ["w1", "w2", "w3"]
    assert [p.name for p in Fleet(_outputs(), only="w2").providers] == ["w2"]


def test_a_fleet_of_providers_already_made_uses_those_very_providers() -> None:
    whole = Fleet(_outputs())
    part = Fleet(whole.outputs, providers=whole.providers[1:])
    assert part.outputs is whole.outputs
    assert all(a is b for a, b in zip(part.providers, whole.providers[1:], strict=True))
    assert [o.value for o in part.each(lambda p: p.name)] == ["w2", "w3"]
