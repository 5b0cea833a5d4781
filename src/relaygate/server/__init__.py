"""The ASGI-free HTTP layer (aiohttp): routes, error envelopes, admin API, UI."""
