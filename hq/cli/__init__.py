"""The `edge-hq` command: one module per command group."""
