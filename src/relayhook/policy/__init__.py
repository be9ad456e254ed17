"""The product's rules as pure functions: state and a time in, what to write out."""
