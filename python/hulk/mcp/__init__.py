"""hulk-mcp: a Model Context Protocol server for operating a running hulk instance (see `server`)."""
