"""Virtual keys, the org > team > key hierarchy and provider credentials (DESIGN §6)."""
