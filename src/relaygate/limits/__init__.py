"""Token-aware rate limits and budgets per key, team, org and user (DESIGN §6).

Kept import-light: `relaygate.config.models` imports `relaygate.limits.config`."""
