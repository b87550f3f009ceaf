"""The service: `hulk serve` wires configuration, observability, JetStream, cache, engine and HTTP."""

from hulk.service.runner import Service, run, serve

__all__ = ["Service", "run", "serve"]
