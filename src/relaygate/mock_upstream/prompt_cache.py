"""In-memory prompt-cache simulation: which request prefixes were seen before.

A request is a sequence of blocks (Anthropic order: tools -> system -> messages) some of
which end a cacheable prefix (a breakpoint). The longest breakpoint prefix seen before
under the same cache scope is read from the cache; the blocks from there up to the last
breakpoint are written; the rest is plain input. This is what Anthropic reports as
`cache_read_input_tokens` / `cache_creation_input_tokens` / `input_tokens`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

# Forget everything past this many remembered prefixes (a mock must not grow forever).
_MAX_REMEMBERED = 1_000_000
# Anthropic checks for hits at about 20 block boundaries back from each breakpoint.
LOOKBACK_BLOCKS = 20
# Anthropic and Bedrock accept at most this many cache breakpoints per request.
MAX_BREAKPOINTS = 4


@dataclass(frozen=True, slots=True)
class CacheBlock:
    """One block of a prompt: the bytes that identify it, its token count, and whether
    a cache breakpoint ends at it."""

    identity: bytes
    tokens: int
    breakpoint: bool


@dataclass(frozen=True, slots=True)
class CacheUsage:
    read: int
    write: int
    uncached: int

    @property
    def total(self) -> int:
        return self.read + self.write + self.uncached


class PromptCacheMemory:
    """Remembers hashes of breakpoint prefixes per cache scope (api key + model)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def reset(self) -> None:
        self._seen.clear()

    def account(self, scope: str, blocks: Sequence[CacheBlock], min_tokens: int = 0) -> CacheUsage:
        """Splits the prompt's tokens into read / written / uncached and remembers its prefixes.

        As Anthropic does, each breakpoint looks for a hit at its own block and up to
        `LOOKBACK_BLOCKS - 1` block boundaries before it, so a conversation that moves its
        breakpoint to the newest message still reads the prefix the previous turn wrote.
        Prefixes shorter than `min_tokens` are never cached.
        """
        total = sum(block.tokens for block in blocks)
        if not any(block.breakpoint for block in blocks):
            return CacheUsage(0, 0, total)
        running = hashlib.blake2b(scope.encode(), digest_size=16)
        cumulative: list[int] = []
        digests: list[bytes] = []
        tokens = 0
        for block in blocks:
            running.update(len(block.identity).to_bytes(4, "little"))
            running.update(block.identity)
            tokens += block.tokens
            cumulative.append(tokens)
            digests.append(running.copy().digest())
        breakpoints = [i for i, b in enumerate(blocks) if b.breakpoint and cumulative[i] >= min_tokens]
        if not breakpoints:
            return CacheUsage(0, 0, total)
        seen = self._seen
        hit = -1
        for bp in breakpoints:
            for i in range(bp, max(hit, bp - LOOKBACK_BLOCKS), -1):
                if digests[i] in seen:
                    hit = i
                    break
        read = cumulative[hit] if hit >= 0 else 0
        write = cumulative[breakpoints[-1]] - read if breakpoints[-1] > hit else 0
        if len(seen) > _MAX_REMEMBERED:
            seen.clear()
        seen.update(digests[bp] for bp in breakpoints)
        return CacheUsage(read, write, total - read - write)
