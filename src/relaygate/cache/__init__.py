"""Caching that saves money (DESIGN §8): an exact cache on a canonical request key, a
semantic cache on a local embedding model (`relaygate[semantic]`), and Anthropic
prompt-cache breakpoints. `relaygate.cache.install` wires them into a gateway."""
