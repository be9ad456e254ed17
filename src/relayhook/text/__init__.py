"""Text below config: templates, escaping for each destination, durations and sizes."""
