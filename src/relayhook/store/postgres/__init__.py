"""The delivery log in PostgreSQL, for several instances sharing one database."""
