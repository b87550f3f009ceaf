"""Command-line entry points: `hulk` (service) and `thor` (operators)."""
