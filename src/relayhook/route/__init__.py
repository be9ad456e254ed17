"""Routing: which rules an event matches and the messages they render, off the event loop."""
