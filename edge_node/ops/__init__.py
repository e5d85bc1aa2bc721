"""Field operations on a node's data directory: backup, restore, retire, doctor."""
