"""The config: YAML with file:line on every node, read into the typed objects of settings.py."""
