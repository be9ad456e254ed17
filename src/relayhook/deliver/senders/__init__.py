"""One sender per destination kind; `factory.make_sender` picks it.

This package's own module imports nothing, so that an apprise worker process, which
imports `apprise_worker` below it, does not load the webhook sender's HTTP client.
"""
