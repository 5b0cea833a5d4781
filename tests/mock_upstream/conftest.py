from __future__ import annotations

from collections.abc import Iterator

import pytest

from relaygate.mock_upstream.faults import FaultConfig
from relaygate.mock_upstream.server import MockUpstreamThread


@pytest.fixture(scope="session")
def upstream_url() -> Iterator[str]:
    """A fault-free mock upstream shared by the format tests (they never read its stats)."""
    with MockUpstreamThread(FaultConfig()) as upstream:
        yield upstream.url


@pytest.fixture
def fresh_upstream() -> Iterator[MockUpstreamThread]:
    """A mock upstream of its own, for tests that count requests."""
    with MockUpstreamThread(FaultConfig()) as upstream:
        yield upstream
