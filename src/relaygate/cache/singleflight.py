"""Identical concurrent misses share one upstream call: the first becomes the leader, the
others wait for its answer (per process; replicas each send at most one)."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T | None]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: str) -> asyncio.Future[T | None] | None:
        """None makes the caller the leader (it must call `finish`); otherwise the leader's
        future, resolved with its answer or None when it got none worth sharing."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight
        self._flights[key] = asyncio.get_running_loop().create_future()
        return None

    def finish(self, key: str, value: T | None) -> None:
        flight = self._flights.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_result(value)

    @staticmethod
    async def wait(flight: asyncio.Future[T | None], timeout_s: float) -> T | None:
        try:
            return await asyncio.wait_for(asyncio.shield(flight), timeout_s)
        except TimeoutError:
            return None
