"""Metrics, structured logs, traces, and the scrubbing that keeps secrets out of them."""
