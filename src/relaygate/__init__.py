"""relaygate: a self-hosted LLM gateway and agent-reliability toolkit."""

__version__ = "0.1.0"
