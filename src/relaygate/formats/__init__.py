"""The common request/response/stream-event types and the wire formats that map onto them."""
