"""Storage behind small interfaces: SQLite or PostgreSQL for durable records, memory or
Redis for hot counters; each interface has both implementations, tested by one suite."""
