"""Sending: the scheduler picks due work, senders send it, decide() judges, the recorder logs."""
