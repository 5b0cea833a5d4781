"""Agent-reliability toolkit: guards and helpers for tool-using agent loops, and the
sandboxed notebook MCP server (`relaygate.agent.sandbox`, `relaygate sandbox serve`)."""

from relaygate.agent.breaker import (
    BreakerDecision,
    MemoryBreakerStore,
    RedisBreakerStore,
    ToolCircuitBreaker,
)
from relaygate.agent.cache_breakpoints import plan_cache_breakpoints
from relaygate.agent.canonical import VOLATILE_KEYS, canonicalize_tool_result
from relaygate.agent.context import ContextWindowManager, OpenAISummariser, estimate_tokens
from relaygate.agent.duplicates import DuplicateDecision, DuplicateToolCallGuard
from relaygate.agent.streaming import StreamingFallback, is_streaming_overload
from relaygate.agent.usage import MemoryUsageStore, RedisUsageStore, UsageDecision, UsageLimiter

__all__ = [
    "VOLATILE_KEYS",
    "BreakerDecision",
    "ContextWindowManager",
    "DuplicateDecision",
    "DuplicateToolCallGuard",
    "MemoryBreakerStore",
    "MemoryUsageStore",
    "OpenAISummariser",
    "RedisBreakerStore",
    "RedisUsageStore",
    "StreamingFallback",
    "ToolCircuitBreaker",
    "UsageDecision",
    "UsageLimiter",
    "canonicalize_tool_result",
    "estimate_tokens",
    "is_streaming_overload",
    "plan_cache_breakpoints",
]
