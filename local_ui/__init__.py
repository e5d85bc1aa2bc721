"""The staff web UI: server-rendered screens over the node's domain, in English and Urdu.

`local_ui.app.create_app(node)` adds the screens to the node's JSON API app, so
one process serves both; `edge-node serve` uses it. Imports point one way:
local_ui -> edge_node.
"""
