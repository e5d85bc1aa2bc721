"""File bundles: the same envelopes as MQTT, carried on a USB stick.

File layout (lengths big-endian uint32):

    b"KEB" | version(1) | (len | envelope)* | len = 0 | SHA-256 of everything before it

A bundle only frames envelopes; each envelope keeps its own signature and
encryption, so a receiver checks them exactly as it checks MQTT messages. The
trailing digest catches a bad copy: a reader checks framing, limits and the
digest over the whole file before it yields a single envelope, so a truncated
or corrupted file is refused before anything is applied. Writers stream to a
temporary file (mode 0600) in the target directory, fsync it and rename it
into place, so a pulled stick never holds half a bundle under the final name.

The node's two flows live here too: `export_outbox` (everything not yet
acknowledged, streamed batch by batch) and `import_ack_bundle` (HQ's signed
ack and downstream items). HQ's import is in hq/bundles.py.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from certs.files import rename_durably
from sync import batches, envelope
from sync.identity import NodeIdentity
from sync.outbox_port import OutboxPort

MAGIC = b"KEB"
VERSION = 1
SUFFIX = ".keb"
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
MAX_ENVELOPES = 100_000
EXPORT_BATCH_RECORDS = 2000
DIGEST_BYTES = 32
_LEN = struct.Struct(">I")
_HEAD_BYTES = len(MAGIC) + 1
_READ_CHUNK_BYTES = 1024 * 1024


class BundleError(ValueError):
    """A bundle file is unusable; `reason` is a short code, the message one sentence."""

    def __init__(self, reason: str, detail: str) -> None:
        """Keep the code (for tests and reports) and a sentence for people."""
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# -- writing -------------------------------------------------------------------------------
class BundleWriter:
    """Streams envelopes into a temporary file; `commit(name)` makes it a bundle atomically."""

    def __init__(self, directory: Path) -> None:
        """Open a temporary file (mode 0600) in `directory`, which must exist."""
        if not directory.is_dir():
            raise BundleError("bad_target", f"{directory}: no such directory "
                              "(is the USB stick mounted?)")
        self.directory = directory
        try:
            fd, name = tempfile.mkstemp(prefix=".keb-", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise BundleError("bad_target", f"{directory}: cannot write ({exc.strerror})") \
                from exc
        self._tmp = Path(name)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.count = 0
        self._write(MAGIC + bytes([VERSION]))

    def _write(self, data: bytes) -> None:
        """Append to the file and the running digest."""
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def fits(self, envelope_bytes: int) -> bool:
        """Whether one more envelope of this size keeps the bundle within the limits."""
        final = self.size + 2 * _LEN.size + envelope_bytes + DIGEST_BYTES
        return self.count < MAX_ENVELOPES and final <= MAX_BUNDLE_BYTES

    def add(self, data: bytes) -> None:
        """Append one envelope (BundleError when it would break a limit)."""
        if not 0 < len(data) <= envelope.MAX_ENVELOPE_BYTES:
            raise BundleError("too_large", f"envelope of {len(data)} bytes cannot be bundled")
        if not self.fits(len(data)):
            raise BundleError("too_large", "bundle would exceed its size or envelope limit")
        self._write(_LEN.pack(len(data)) + data)
        self.count += 1

    def commit(self, name: str) -> Path:
        """Terminate, checksum, fsync and rename to `name` in the directory; returns the path."""
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"bad bundle file name {name!r}")
        self._write(_LEN.pack(0))
        self._file.write(self._hash.digest())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self._tmp, 0o600)
        target = self.directory / name
        rename_durably(self._tmp, target)
        return target

    def abort(self) -> None:
        """Drop the temporary file (nothing appears under a final name)."""
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BundleWriter:
        """Use as a context manager: an exception or a missing commit removes the temp file."""
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Clean up whatever was not committed."""
        self.abort()



def write_bundle(directory: Path, name: str, envelopes: list[bytes]) -> Path:
    """Write a small bundle in one go (acks, tests)."""
    with BundleWriter(directory) as writer:
        for data in envelopes:
            writer.add(data)
        return writer.commit(name)


# -- reading -------------------------------------------------------------------------------
class BundleReader:
    """A verified bundle: opening checks framing, limits and digest; iterating yields envelopes."""

    def __init__(self, path: Path) -> None:
        """Open and check the whole file (BundleError names what is wrong)."""
        self.path = path
        try:
            self._file: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise BundleError("unreadable", f"{path}: cannot read ({exc.strerror})") from exc
        try:
            self.count = self._scan()
        except BaseException:
            self._file.close()
            raise

    def _scan(self) -> int:
        """One streaming pass over the file; returns the number of envelopes."""
        size = os.fstat(self._file.fileno()).st_size
        if size > MAX_BUNDLE_BYTES:
            raise BundleError("too_large", f"{self.path.name}: {size} bytes is over the "
                              f"{MAX_BUNDLE_BYTES}-byte bundle limit")
        digest = hashlib.sha256()
        self._head(digest)
        count = 0
        while True:
            length = self._length(digest, count)
            if length == 0:
                break
            count += 1
            if count > MAX_ENVELOPES:
                raise BundleError("too_large", f"{self.path.name}: more than "
                                  f"{MAX_ENVELOPES} envelopes")
            self._skip(length, digest, count)
        self._check_digest(digest)
        return count

    def _head(self, digest: Any) -> None:
        """Magic and version."""
        head = self._file.read(_HEAD_BYTES)
        if len(head) < len(MAGIC) or head[:len(MAGIC)] != MAGIC:
            raise BundleError("foreign", f"{self.path.name}: not a Khidmat bundle file")
        if len(head) < _HEAD_BYTES:
            raise BundleError("truncated", f"{self.path.name}: truncated (no version byte)")
        if head[len(MAGIC)] != VERSION:
            raise BundleError("bad_version", f"{self.path.name}: unsupported bundle version "
                              f"{head[len(MAGIC)]} (this software reads version {VERSION})")
        digest.update(head)

    def _length(self, digest: Any, index: int) -> int:
        """The next length prefix, checked against the envelope limit."""
        raw = self._file.read(_LEN.size)
        if len(raw) < _LEN.size:
            raise BundleError("truncated", f"{self.path.name}: truncated after "
                              f"{index} envelope(s); copy the file again")
        digest.update(raw)
        (length,) = _LEN.unpack(raw)
        if length > envelope.MAX_ENVELOPE_BYTES:
            raise BundleError("corrupt", f"{self.path.name}: envelope {index + 1} claims "
                              f"{length} bytes; the file is corrupt")
        return int(length)

    def _skip(self, length: int, digest: Any, index: int) -> None:
        """Hash one envelope without keeping it."""
        left = length
        while left:
            chunk = self._file.read(min(left, _READ_CHUNK_BYTES))
            if not chunk:
                raise BundleError("truncated", f"{self.path.name}: truncated inside "
                                  f"envelope {index}; copy the file again")
            digest.update(chunk)
            left -= len(chunk)

    def _check_digest(self, digest: Any) -> None:
        """The trailing SHA-256 matches and nothing follows it."""
        stored = self._file.read(DIGEST_BYTES)
        if len(stored) < DIGEST_BYTES:
            raise BundleError("truncated", f"{self.path.name}: truncated (checksum missing); "
                              "copy the file again")
        if self._file.read(1):
            raise BundleError("corrupt", f"{self.path.name}: data after the checksum; "
                              "the file is corrupt")
        if stored != digest.digest():
            raise BundleError("bad_checksum", f"{self.path.name}: checksum mismatch; the file "
                              "is corrupt or was altered (nothing was applied)")

    def __iter__(self) -> Iterator[bytes]:
        """The envelopes in file order (one in memory at a time)."""
        self._file.seek(_HEAD_BYTES)
        for _ in range(self.count):
            (length,) = _LEN.unpack(self._file.read(_LEN.size))
            data = self._file.read(length)
            if len(data) != length:
                raise BundleError("truncated", f"{self.path.name}: changed while being read")
            yield data

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> BundleReader:
        """Use as a context manager."""
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the file."""
        self.close()


# -- the node's flows ----------------------------------------------------------------------
@dataclass(frozen=True)
class ExportReport:
    """What `export_outbox` wrote."""

    path: Path
    first_seq: int | None
    last_seq: int | None
    records: int
    envelopes: int
    complete: bool


def export_name(node_id: str, first: int | None, last: int | None) -> str:
    """`NODE-up-FIRST-LAST.keb`, or `NODE-up-empty.keb` when there is nothing to send."""
    if first is None or last is None:
        return f"{node_id}-up-empty{SUFFIX}"
    return f"{node_id}-up-{first}-{last}{SUFFIX}"


def export_outbox(port: OutboxPort, identity: NodeIdentity, directory: Path,
                  progress: Callable[[int], None] | None = None) -> ExportReport:
    """Everything after the last ack as one bundle, streamed batch by batch.

    The bundle also carries the node's downstream ack (naming the items it refused),
    so HQ learns what came down by the same road. When the backlog exceeds the
    bundle limits the bundle holds a contiguous prefix (`complete=False`): import its ack, then
    export again.
    """
    acked = port.acked_seq()
    upto = port.stats().get("last_seq")
    first: int | None = None
    after, records = acked, 0
    with BundleWriter(directory) as writer:
        writer.add(batches.seal_port_down_ack(identity, port))
        complete = True
        while True:
            batch = [r for r in batches.take_batch(port, after + 1, EXPORT_BATCH_RECORDS)
                     if not isinstance(upto, int) or r["seq"] <= upto]
            if not batch:
                break
            sealed = batches.seal_batch(identity, batch)
            if not writer.fits(len(sealed)):
                complete = False
                break
            writer.add(sealed)
            first = batch[0]["seq"] if first is None else first
            after, records = batch[-1]["seq"], records + len(batch)
            if progress:
                progress(len(batch))
        last = after if first is not None else None
        path = writer.commit(export_name(identity.node_id, first, last))
        return ExportReport(path, first, last, records, writer.count, complete)


@dataclass(frozen=True)
class AckReport:
    """What `import_ack_bundle` changed on the node."""

    acked_seq: int
    advanced: bool
    down_applied: int
    down_seq: int


def import_ack_bundle(port: OutboxPort, identity: NodeIdentity, path: Path) -> AckReport:
    """Verify HQ's ack bundle completely, then apply its ack and downstream items.

    Every envelope must be signed by HQ and addressed to this node; if any is
    not, nothing is applied.
    """
    with BundleReader(path) as reader:
        if reader.count == 0:
            raise BundleError("empty", f"{path.name}: holds no envelopes")
        for index, data in enumerate(reader, start=1):
            _open_from_hq(data, identity, path.name, index)
        before = port.acked_seq()
        down_applied = 0
        for index, data in enumerate(reader, start=1):
            kind, body = _open_from_hq(data, identity, path.name, index)
            if kind == "ack":
                seq = batches.ack_seq_of(body)
                if seq is not None and seq > port.acked_seq():
                    port.mark_acked(seq)
            else:
                down_applied += batches.apply_down_items(port, body)
    after = port.acked_seq()
    return AckReport(after, after > before, down_applied, port.down_seq())


def _open_from_hq(data: bytes, identity: NodeIdentity, name: str,
                  index: int) -> tuple[str, Any]:
    """Check one envelope of an ack bundle and return (kind, body)."""
    try:
        env = envelope.parse(data)
        envelope.verify(env, identity.hq_sign_public)
        if env.header.get("node") != identity.node_id:
            raise envelope.EnvelopeError("wrong_node", f"addressed to node "
                                         f"{env.header.get('node')}, not {identity.node_id}")
        kind = str(env.header["kind"])
        if kind not in ("ack", "down"):
            raise envelope.EnvelopeError("bad_kind", f"a {kind} envelope does not belong "
                                         "in an ack bundle (is this an export bundle?)")
        body = envelope.open_body(env, identity.hpke_private)
    except envelope.EnvelopeError as exc:
        hint = " (not signed by this node's HQ)" if exc.reason == "bad_signature" else ""
        raise BundleError(exc.reason, f"{name}: envelope {index}: {exc.detail}{hint}; "
                          "nothing was applied") from exc
    if kind == "ack" and batches.ack_seq_of(body) is None:
        raise BundleError("bad_body", f"{name}: envelope {index}: ack without a seq within "
                          f"0..{envelope.MAX_SEQ}; nothing was applied")
    problem = batches.down_items_problem(body) if kind == "down" else None
    if problem:
        raise BundleError("bad_body", f"{name}: envelope {index}: {problem}; "
                          "nothing was applied")
    return kind, body

