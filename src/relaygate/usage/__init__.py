"""Cost and usage: the pricing catalog, the cost stage, the ledger, spend queries and
alerts. `relaygate.usage.install.install(gw)` wires them into a gateway."""
