"""Strategies (single, fallback, loadbalance, conditional), retry with backoff, breakers."""
