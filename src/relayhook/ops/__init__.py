"""Running it: logs, metrics, secret redaction, systemd."""
