"""The SQLite store: store.py implements the interface; the SQL is split by concern."""
