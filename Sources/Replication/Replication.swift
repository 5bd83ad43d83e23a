// Replication: see docs/ARCHITECTURE.md.
