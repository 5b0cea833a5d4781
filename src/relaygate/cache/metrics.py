"""The cache's Prometheus series, on the gateway's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relaygate.observability.metrics import Buckets, Counts

_LOOKUP_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.lookups = Counter("relaygate_cache_tier_lookups", "Cache lookups by tier, result and route",
                               ["tier", "result", "route"], registry=r)
        self.lookup_seconds = Histogram("relaygate_cache_lookup_seconds", "Cache lookup latency by tier",
                                        ["tier"], buckets=_LOOKUP_BUCKETS, registry=r)
        self.stores = Counter("relaygate_cache_stores", "Answers written to the cache", ["tier"], registry=r)
        self.bytes = Gauge("relaygate_cache_bytes", "Bytes held by the in-process exact cache", registry=r)
        self.entries = Gauge("relaygate_cache_entries", "Entries held in process by tier", ["tier"], registry=r)
        self.evictions = Counter("relaygate_cache_evictions", "Entries evicted to stay within bounds",
                                 ["tier"], registry=r)
        self.coalesced = Counter("relaygate_cache_coalesced", "Requests answered by another request's "
                                 "upstream call (single-flight)", ["route"], registry=r)
        self.shadow = Counter("relaygate_cache_semantic_shadow", "Shadow-mode semantic lookups "
                              "(would_hit = a hit the enforce mode would have served)", ["result", "route"],
                              registry=r)
        self.false_hits = Counter("relaygate_cache_false_hits", "Hits reported wrong via "
                                  "POST /admin/cache/feedback", ["tier", "route"], registry=r)
        self.purged = Counter("relaygate_cache_purged", "Entries removed by POST /admin/cache/purge",
                              ["tier"], registry=r)
        # the hot path's series: counts added at scrape time (`flush`), histogram children cached
        self.lookup = Counts(self.lookups)
        self.stored = Counts(self.stores)
        self.lookup_time = Buckets(self.lookup_seconds, _LOOKUP_BUCKETS)

    def flush(self) -> None:
        self.lookup.flush()
        self.stored.flush()
        self.lookup_time.flush()
