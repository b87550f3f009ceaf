"""hulk's command lines: `thor` (operate a running instance) and `hulk` (run one)."""
