"""The `edge-node` command: one module per command group."""
