"""Running it: logs, the console:// destination, metrics, secret redaction, systemd."""
