"""Product rules with no I/O, below every floor that reads them: silences, quiet hours."""
