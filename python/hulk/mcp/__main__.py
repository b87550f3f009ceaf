"""`python -m hulk.mcp`: the hulk-mcp server (stdio by default)."""

from hulk.mcp.server import main

main()
