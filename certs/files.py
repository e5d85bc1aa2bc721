"""The one way files reach the disk durably (keys, certificates, the CRL, manifests, units).

`write_atomic` writes a temporary file beside the target (created 0600, so a
secret is never readable on the way), fsyncs it, gives it its final owner and
mode, renames it over the target and fsyncs the directory: after a crash the
target holds either the old or the new content, never a mix and never
nothing. A CRL or `ca.pem` lost that way would lock every client out.
`create_new` is the same for a file that must not exist yet (key files);
`rename_durably` for a file its caller streamed and fsynced itself (backups,
bundles). This module sits below everything (certs, sync, edge_node, hq).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# What file systems answer when they do not fsync directories (e.g. vfat on USB sticks).
_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


def fsync_dir(directory: Path) -> None:
    """Make renames, creations and unlinks in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace `path` with `data` atomically and durably; `owner` is (uid, gid) to chown to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if owner is not None:
            os.chown(tmp, *owner)
        os.chmod(tmp, mode)
        rename_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create `path` (FileExistsError when it exists) with `data`, fsynced with its directory."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(path.parent)


def rename_durably(source: Path, target: Path) -> None:
    """Rename an already fsynced file over `target`, then fsync the target's directory."""
    os.replace(source, target)
    fsync_dir(target.parent)
