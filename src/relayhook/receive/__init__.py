"""Receiving: the /hooks/ endpoint, who may send, and from raw request to event."""
