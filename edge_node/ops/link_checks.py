"""The doctor's checks of the node's link to HQ: certificate, CRL and the broker's TLS."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.hostnames import server_names
from certs.layout import CA_CERT, CRL, NODE_CERT, NODE_KEY
from edge_node.ops.checkup import (
    CERT_RENEW_FRACTION,
    CRL_WARN_LEFT_S,
    ENROLL_FIX,
    FAIL,
    HOSTNAME_MISMATCH_CODES,
    PASS,
    SKIP,
    WARN,
    Doctor,
    Result,
    span,
)
from edge_node.paths import is_enrolled, sync_dir


# -- enrollment: certificate, CRL, broker -------------------------------------------------
def _not_enrolled(doc: Doctor, name: str) -> Result | None:
    """WARN 'not enrolled' (the node works offline) or None when enrolled."""
    if is_enrolled(doc.settings):
        return None
    return Result(name, WARN, "not enrolled: the node works offline only", ENROLL_FIX)


def _load_cert(path: Path) -> x509.Certificate:
    """A PEM certificate."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def check_certificate(doc: Doctor) -> Result:
    """The node certificate: issued by the sync dir's CA, carries our key, not expired."""
    name = "certificate"
    if (missing := _not_enrolled(doc, name)) is not None:
        return missing
    directory = sync_dir(doc.settings)
    reenroll = "re-enroll with this fleet's HQ: " + ENROLL_FIX.split(": ", 1)[1]
    try:
        cert, ca = _load_cert(directory / NODE_CERT), _load_cert(directory / CA_CERT)
    except (OSError, ValueError) as exc:
        return Result(name, FAIL, f"unreadable certificate in {directory} ({exc})", reenroll)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, ValueError, TypeError
        return Result(name, FAIL, f"node certificate was not issued by the CA in "
                      f"{directory / CA_CERT} (issuer {cert.issuer.rfc4514_string()})",
                      reenroll)
    if not _carries_node_key(cert, directory / NODE_KEY):
        return Result(name, FAIL, "node certificate does not carry this node's key (node.key)",
                      reenroll)
    return _validity(name, cert, doc.now(), ca)


def _carries_node_key(cert: x509.Certificate, key_file: Path) -> bool:
    """True when node.key is the private half of the certificate's public key."""
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return False
    return bool(key.public_key().public_bytes(*raw) == cert.public_key().public_bytes(*raw))


def _validity(name: str, cert: x509.Certificate, now: dt.datetime,
              ca: x509.Certificate) -> Result:
    """Expired / not yet valid / last third of life / fine."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if ca.not_valid_after_utc < now:
        return Result(name, FAIL, f"the fleet CA expired on {ca.not_valid_after_utc:%Y-%m-%d}",
                      "HQ must issue a new CA and re-enroll the fleet")
    if now < start:
        return Result(name, FAIL, f"certificate not valid before {start:%Y-%m-%d %H:%M} UTC: "
                      "is the clock wrong?", "set the clock right (see clock)")
    if now > end:
        return Result(name, FAIL, f"certificate expired on {end:%Y-%m-%d}: the broker "
                      "refuses this node", "re-enroll: " + ENROLL_FIX.split(": ", 1)[1])
    left = (end - now).total_seconds()
    if now >= start + (end - start) * CERT_RENEW_FRACTION:
        return Result(name, WARN, f"certificate expires on {end:%Y-%m-%d} (in {span(left)}): "
                      "in the last third of its life, renewal due",
                      "bring the link up: the sync agent asks HQ for a new certificate by "
                      "itself; if it stays due, re-enroll")
    return Result(name, PASS, f"valid until {end:%Y-%m-%d} ({span(left)} left), chains to "
                  f"{ca.subject.rfc4514_string()}")


def check_crl(doc: Doctor) -> Result:
    """A CRL in the sync dir, if any: signed by the CA, nextUpdate not passed, us not on it."""
    name = "crl"
    if (missing := _not_enrolled(doc, name)) is not None:
        return missing
    directory = sync_dir(doc.settings)
    path = directory / CRL
    if not path.exists():
        return Result(name, SKIP, "no CRL on this node (the broker enforces revocation)")
    fix = f"get a fresh CRL from HQ (its CA directory's crl.pem) and copy it to {path}"
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        ca, cert = _load_cert(directory / CA_CERT), _load_cert(directory / NODE_CERT)
    except (OSError, ValueError) as exc:
        return Result(name, FAIL, f"unreadable CRL or certificate ({exc})", fix)
    public = ca.public_key()
    if not crl.is_signature_valid(public):  # type: ignore[arg-type]
        return Result(name, FAIL, f"{path} is not signed by the fleet CA", fix)
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        return Result(name, FAIL, "this node's certificate is revoked",
                      "ask HQ why; a revoked node must be enrolled again")
    now, next_update = doc.now(), crl.next_update_utc
    age = span((now - crl.last_update_utc).total_seconds())
    if next_update is None:
        return Result(name, WARN, f"CRL ({age} old) has no nextUpdate", fix)
    if next_update < now:
        return Result(name, FAIL, f"CRL expired on {next_update:%Y-%m-%d %H:%M} UTC "
                      "(nextUpdate passed): a broker using it refuses every client", fix)
    if (next_update - now).total_seconds() < CRL_WARN_LEFT_S:
        return Result(name, WARN, f"CRL expires on {next_update:%Y-%m-%d}", fix)
    return Result(name, PASS, f"CRL {age} old, valid until {next_update:%Y-%m-%d}")


def check_broker(doc: Doctor) -> Result:
    """TCP connect and TLS handshake with the node's client certificate (short timeout)."""
    name = "broker"
    if (missing := _not_enrolled(doc, name)) is not None:
        return missing
    directory = sync_dir(doc.settings)
    try:
        broker = json.loads((directory / "broker.json").read_text())
        host, port = str(broker["host"]), int(broker["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return Result(name, FAIL, f"{directory / 'broker.json'} is missing or malformed",
                      "re-enroll: " + ENROLL_FIX.split(": ", 1)[1])
    try:
        context = ssl.create_default_context(cafile=str(directory / CA_CERT))
        context.load_cert_chain(str(directory / NODE_CERT), str(directory / NODE_KEY))
    except (OSError, ssl.SSLError) as exc:
        return Result(name, FAIL, f"cannot load the node's TLS files ({exc})", "see certificate")
    chain = (str(directory / NODE_CERT), str(directory / NODE_KEY))
    return _handshake(host, port, context, doc.limits.broker_timeout_s, chain)


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout: float,
               chain: tuple[str, str]) -> Result:
    """Connect, handshake, then read briefly: TLS 1.3 servers refuse a client cert late.

    `chain` is the node's certificate and key files (for a second look at a name mismatch).
    """
    refused = ("the broker refused this node's certificate (revoked, expired or another CA: "
               "see certificate and crl); re-enroll if they pass")
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            version = tls.version()
            tls.settimeout(min(1.0, timeout))
            try:
                if tls.recv(1) == b"":
                    return Result("broker", FAIL, f"{host}:{port} closed the connection "
                                  "after the TLS handshake", refused)
            except TimeoutError:
                pass  # accepted: the broker waits for our MQTT CONNECT
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in HOSTNAME_MISMATCH_CODES:
            return _name_mismatch(host, port, timeout, chain)
        return Result("broker", FAIL, f"{host}:{port} presents a certificate this node does "
                      f"not trust ({exc.verify_message})",
                      "the broker is not this fleet's, or the node was enrolled with another "
                      "CA: check broker.json, re-enroll")
    except ssl.SSLError as exc:
        return Result("broker", FAIL, f"TLS handshake with {host}:{port} failed "
                      f"({exc.reason or exc})", refused)
    except OSError as exc:
        return Result("broker", WARN, f"{host}:{port} unreachable ({exc.strerror or exc}); "
                      "the node keeps working offline and syncs when the link is back",
                      f"check the WAN link, DNS and firewall towards {host}:{port}; or carry "
                      "a bundle: `edge-node sync export --out /media/usb`")
    elapsed = (time.monotonic() - started) * 1000
    return Result("broker", PASS, f"{host}:{port} reachable, TLS handshake accepted "
                  f"({version}, {elapsed:.0f} ms)")


def _name_mismatch(host: str, port: int, timeout: float, chain: tuple[str, str]) -> Result:
    """The broker's certificate is this fleet's but is not valid for the host in broker.json.

    The node's certificate is fine, so re-enrolling with the same address fails the same way:
    the bundle must name a host the broker certificate holds, or the certificate that host.
    """
    names = _broker_names(host, port, timeout, chain)
    listed = ", ".join(names) if names else "other names"
    example = f"--broker {names[0]}:{port}" if names else f"--broker NAME:{port}"
    return Result("broker", FAIL, f"{host}:{port} presents a certificate valid for {listed}, "
                  f"not {host}: the node can never connect with this address",
                  f"at HQ, sign this node's request again with a name the broker certificate "
                  f"holds ({example}) and install the new bundle; or re-issue the broker "
                  f"certificate with {host} among its names")


def _broker_names(host: str, port: int, timeout: float, chain: tuple[str, str]) -> list[str]:
    """The names in the broker certificate (handshake without the name check), or []."""
    unchecked = ssl.create_default_context()
    unchecked.check_hostname = False
    unchecked.verify_mode = ssl.CERT_NONE  # only reading names: trust was checked already
    try:
        unchecked.load_cert_chain(*chain)
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                unchecked.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return []
    return server_names(x509.load_der_x509_certificate(der)) if der else []


