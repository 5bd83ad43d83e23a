// Observability: see docs/ARCHITECTURE.md.
