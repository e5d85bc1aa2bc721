"""The replication protocol shared by node and HQ: HLC, change capture, envelopes.

Nothing here imports `edge_node` or `local_ui`: the protocol knows tables,
rows and envelopes, not the center's domain.
"""
