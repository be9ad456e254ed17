"""Product rules with no I/O, below all that read them: noise, silences, quiet hours, who
may send. State and a time in, what to write out."""
