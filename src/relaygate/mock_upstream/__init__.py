"""A fake LLM upstream that speaks each provider's wire format and injects faults.

Public API: `build_app`, `run_mock_upstream`, `serving` (async context manager),
`MockUpstreamThread` (background thread, for synchronous clients) and `FaultConfig`.
"""

from relaygate.mock_upstream.faults import FaultConfig
from relaygate.mock_upstream.server import MockUpstreamThread, build_app, run_mock_upstream, serving

__all__ = ["FaultConfig", "MockUpstreamThread", "build_app", "run_mock_upstream", "serving"]
