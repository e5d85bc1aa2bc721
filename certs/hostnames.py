"""Which host names a server certificate is valid for, matched as a TLS client matches them.

Nodes verify the broker's certificate with Python's `ssl` (OpenSSL): an IP
address must appear as an IP address entry of the subjectAltName, a DNS name
as a DNS entry (a leading `*.` stands for exactly one label). Checking a
broker address against these rules at signing time catches a bundle whose
node could never connect.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509


def server_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses of the certificate's subjectAltName, as text."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def _dns_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching of one DNS entry: case-insensitive, `*.` only as the whole left label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == host


def names_host(cert: x509.Certificate, host: str) -> bool:
    """True when a client connecting to `host` would accept `cert` (name check only)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if address is not None:
        return address in san.get_values_for_type(x509.IPAddress)
    return any(_dns_matches(name, host) for name in san.get_values_for_type(x509.DNSName))
