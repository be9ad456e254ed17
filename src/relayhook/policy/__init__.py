"""Product rules with no I/O, below all that read them: silences, quiet hours, who may send."""
