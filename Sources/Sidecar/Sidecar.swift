// Sidecar: see docs/ARCHITECTURE.md.
