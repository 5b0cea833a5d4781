"""The in-process vector index: one numpy matrix of unit vectors per context (the hash of
tenant, route, system prompt, history and parameters), searched by dot product. A lookup
only ever compares questions asked in exactly the same context."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from relaygate.cache.entry import CachedAnswer
from relaygate.cache.semantic.embedder import DIM


@dataclass(slots=True)
class SemanticEntry:
    id: str
    context: str
    tenant: str
    route: str
    text: str
    vector: np.ndarray
    answer: CachedAnswer
    expires_at: float  # wall clock (shared with other replicas through Redis)


class _Bucket:
    """Rows of one context; removal moves the last row into the hole (O(1))."""

    def __init__(self) -> None:
        self.matrix = np.zeros((4, DIM), dtype=np.float32)
        self.ids: list[str] = []
        self.row: dict[str, int] = {}

    def add(self, entry_id: str, vector: np.ndarray) -> None:
        n = len(self.ids)
        if n == self.matrix.shape[0]:
            grown = np.zeros((n * 2, DIM), dtype=np.float32)
            grown[:n] = self.matrix
            self.matrix = grown
        self.matrix[n] = vector
        self.ids.append(entry_id)
        self.row[entry_id] = n

    def remove(self, entry_id: str) -> None:
        i = self.row.pop(entry_id)
        last = len(self.ids) - 1
        if i != last:
            moved = self.ids[last]
            self.matrix[i] = self.matrix[last]
            self.ids[i] = moved
            self.row[moved] = i
        self.ids.pop()

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """One float32 matrix-vector product over the live rows (a contiguous prefix)."""
        return np.asarray(self.matrix[: len(self.ids)] @ vector)


class VectorIndex:
    def __init__(self, max_entries: int, on_evict: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, SemanticEntry] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self._by_text: dict[tuple[str, str], str] = {}
        self._on_evict = on_evict
        self._clock = clock

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: SemanticEntry) -> None:
        """Adds (or replaces: same id, or the same question in the same context)."""
        self.remove(entry.id)
        same = self._by_text.get((entry.context, entry.text))
        if same is not None:
            self.remove(same)
        self.entries[entry.id] = entry
        self._by_text[(entry.context, entry.text)] = entry.id
        self._buckets.setdefault(entry.context, _Bucket()).add(entry.id, entry.vector)
        evicted = 0
        while len(self.entries) > self.max_entries:
            self.remove(next(iter(self.entries)))
            evicted += 1
        if evicted and self._on_evict is not None:
            self._on_evict(evicted)

    def remove(self, entry_id: str) -> bool:
        entry = self.entries.pop(entry_id, None)
        if entry is None:
            return False
        if self._by_text.get((entry.context, entry.text)) == entry_id:
            del self._by_text[(entry.context, entry.text)]
        bucket = self._buckets[entry.context]
        bucket.remove(entry_id)
        if not bucket.ids:
            del self._buckets[entry.context]
        return True

    def purge(self, tenant: str | None = None, route: str | None = None) -> int:
        doomed = [e.id for e in self.entries.values()
                  if (tenant is None or e.tenant == tenant) and (route is None or e.route == route)]
        for entry_id in doomed:
            self.remove(entry_id)
        return len(doomed)

    def search(self, context: str, vector: np.ndarray, threshold: float, limit: int = 5) -> list[tuple[float, SemanticEntry]]:
        """The best live entries of this context at or above the threshold, best first."""
        bucket = self._buckets.get(context)
        if bucket is None:
            return []
        scores = bucket.scores(np.asarray(vector, dtype=np.float32))
        # only rows at or above the threshold matter (usually none or a few): no full sort
        order = np.flatnonzero(scores >= threshold)
        if order.size > limit * 2:
            order = order[np.argpartition(-scores[order], limit * 2 - 1)[: limit * 2]]
        order = order[np.argsort(-scores[order], kind="stable")]
        now = self._clock()
        found: list[tuple[float, SemanticEntry]] = []
        expired: list[str] = []
        for i in order:
            score = float(scores[i])
            if score < threshold:
                break
            entry = self.entries[bucket.ids[i]]
            if entry.expires_at <= now:
                expired.append(entry.id)
                continue
            found.append((score, entry))
            if len(found) >= limit:
                break
        for entry_id in expired:
            self.remove(entry_id)
        return found
