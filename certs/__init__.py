"""PKI of the fleet: HQ's CA, node keys and certificates, revocation, broker config.

Generated keys are written with mode 0600 and never committed.
"""
