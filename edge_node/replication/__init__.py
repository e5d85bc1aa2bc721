"""The node's side of replication: outbox port over the node database and the agent runtime."""
