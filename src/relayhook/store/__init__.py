"""Everything relayhook keeps: the interface (base.py) and its implementations."""
