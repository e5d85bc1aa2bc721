"""The names of the PKI's files, spelled once (certs, sync and edge_node use these).

A node's sync directory holds `node.key` + `node.pem` (its ECDSA key and
certificate), `node-hpke.key` (X25519, opens downstream envelopes), `ca.pem`
(the device CA) and, copied from HQ, `crl.pem`. HQ's CA directory and a
broker directory keep the CA certificate and the CRL under the same names.
"""

from __future__ import annotations

NODE_KEY = "node.key"
NODE_CERT = "node.pem"
NODE_HPKE_KEY = "node-hpke.key"
FLEET_KEY = "fleet.key"  # the fleet blind-index key(s) HQ sealed to the node, opened (0600)
CA_CERT = "ca.pem"
CRL = "crl.pem"
