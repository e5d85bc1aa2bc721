"""`edge-node install-systemd`: service account, data directory and unit files.

The unit files live in the repository's `systemd/` directory and name the
venv as /opt/khidmat-edge/.venv; installing renders that path to the venv this
command runs from. Every change is planned first, so `--dry-run` prints exactly
what a real run does, and a unit that differs from ours (edited by hand, or
from an older release) stops the install before anything changes unless
`--force` is given (the old file is then kept as `<unit>.bak`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import click

from certs.files import write_atomic

TEMPLATE_BIN_DIR = "/opt/khidmat-edge/.venv/bin"
UNIT_DIR = "etc/systemd/system"
CREDSTORE_DIR = "etc/credstore.encrypted"
CREDENTIAL_NAME = "edge-node-key"
NODE_UNITS = ("edge-node.service", "edge-node-backup.service", "edge-node-backup.timer")
HQ_UNITS = ("edge-hq.service",)
UNIT_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
NOLOGIN = "/usr/sbin/nologin"


@dataclass(frozen=True)
class Account:
    """A system account that owns one state directory."""

    user: str
    home: str  # absolute path on the target machine
    description: str


NODE_ACCOUNT = Account("edge-node", "/var/lib/edge-node", "Khidmat Edge node")
HQ_ACCOUNT = Account("edge-hq", "/var/lib/edge-hq", "Khidmat Edge HQ ingest")


class InstallError(click.ClickException):
    """The install cannot go ahead (changed unit, missing tool, not root)."""


@dataclass(frozen=True)
class Step:
    """One planned change: what it does (printed) and how."""

    description: str
    run: Callable[[], None]


def source_dir() -> Path:
    """The repository's systemd/ directory next to this package."""
    return Path(__file__).resolve().parents[2] / "systemd"


def default_bin_dir() -> Path:
    """The bin directory of the running install (venv), where `edge-node` lives."""
    here = Path(sys.executable).parent
    if (here / "edge-node").exists():
        return here
    found = shutil.which("edge-node")
    return Path(found).parent if found else here


def render(text: str, bin_dir: Path) -> str:
    """A unit file with the venv path of this machine."""
    return text.replace(TEMPLATE_BIN_DIR + "/", f"{bin_dir}/")


def on_target(root: Path, path: str) -> Path:
    """`path` (absolute on the target machine) under the install root."""
    return root / path.lstrip("/")


def doctor_command(bin_dir: Path) -> str:
    """How to run the doctor with the service's credential (the key is sealed for it)."""
    unit = "edge-node-doctor"
    return (f"systemd-run --unit={unit} --pipe --wait --collect -p User={NODE_ACCOUNT.user} "
            f"-p LoadCredentialEncrypted={CREDENTIAL_NAME}:/{CREDSTORE_DIR}/{CREDENTIAL_NAME} "
            f"-E EDGE_NODE_KEY_FILE=/run/credentials/{unit}.service/{CREDENTIAL_NAME} "
            f"-E EDGE_NODE_DATA_DIR={NODE_ACCOUNT.home} {bin_dir}/edge-node doctor")


# -- planning -----------------------------------------------------------------------------
def _unit_steps(root: Path, source: Path, names: tuple[str, ...], bin_dir: Path,
                force: bool) -> list[Step]:
    """Create/replace each unit; refuse (before any change) to clobber a changed one."""
    steps, changed = [], []
    for name in names:
        try:
            text = render((source / name).read_text(encoding="utf-8"), bin_dir)
        except OSError as exc:
            raise InstallError(f"{source / name}: cannot read the unit ({exc.strerror}); "
                               "give the repository's systemd/ with --units") from exc
        target = on_target(root, f"/{UNIT_DIR}/{name}")
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        if target.exists() and not force:
            changed.append(str(target))
            continue
        verb = "replace (old kept as .bak)" if target.exists() else "write"
        steps.append(Step(f"{verb} {target} (mode {UNIT_MODE:04o})",
                          partial(_write_unit, target, text)))
    if changed:
        raise InstallError(
            f"{', '.join(changed)} differ(s) from this release's unit; nothing was changed. "
            "Keep local changes in `systemctl edit <unit>` drop-ins, then rerun with --force "
            "to replace the file (the old one is kept as .bak)")
    return steps


def _account_steps(root: Path, account: Account) -> list[Step]:
    """The system user and group, then its state directory (0700, owned by it)."""
    home = on_target(root, account.home)
    steps = []
    ids = _lookup(root, account.user)
    if ids is None:
        command = _user_command(root, account)
        steps.append(Step(f"create system user {account.user}: {' '.join(command)}",
                          partial(_create_user, root, command)))
    if ids is None or not _dir_is(home, ids):
        steps.append(Step(f"make {home} (mode {PRIVATE_DIR_MODE:04o}, owner {account.user})",
                          partial(_own_dir, home, root, account.user)))
    return steps


def _root_dir_steps(root: Path, paths: tuple[str, ...]) -> list[Step]:
    """Root-only directories for credentials and local settings."""
    me = (os.geteuid(), os.getegid())  # root, except for a --root install by a user
    dirs = [d for d in (on_target(root, p) for p in paths) if not _dir_is(d, me)]
    return [Step(f"make {d} (mode {PRIVATE_DIR_MODE:04o}, owner root)", partial(_private_dir, d))
            for d in dirs]


def plan_install(root: Path, source: Path, bin_dir: Path, hq: bool, force: bool) -> list[Step]:
    """Every change an install makes, in order; raises InstallError before any change."""
    account, units = (HQ_ACCOUNT, HQ_UNITS) if hq else (NODE_ACCOUNT, NODE_UNITS)
    settings_dir = "/etc/edge-hq" if hq else "/etc/edge-node"
    steps = _unit_steps(root, source, units, bin_dir, force)  # first: may refuse
    return [*_account_steps(root, account),
            *_root_dir_steps(root, (f"/{CREDSTORE_DIR}", settings_dir)), *steps]


# -- doing --------------------------------------------------------------------------------
def _write_unit(target: Path, text: str) -> None:
    """Write a unit atomically with mode 0644, keeping a replaced one as .bak."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.copy2(target, target.with_name(target.name + ".bak"))
    write_atomic(target, text.encode("utf-8"), mode=UNIT_MODE)


def _dir_is(path: Path, ids: tuple[int, int]) -> bool:
    """True when `path` is already a 0700 directory owned by `ids` (uid, gid)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    return (path.is_dir() and info.st_mode & 0o777 == PRIVATE_DIR_MODE
            and (info.st_uid, info.st_gid) == ids)


def _private_dir(path: Path) -> None:
    """A directory only its owner can enter."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)


def _own_dir(path: Path, root: Path, user: str) -> None:
    """A 0700 directory owned by `user` (as found in the target's passwd)."""
    _private_dir(path)
    ids = _lookup(root, user)
    if ids is None:
        raise InstallError(f"user {user} was not created; see the messages above")
    try:
        os.chown(path, *ids)
    except PermissionError as exc:
        raise InstallError(f"{path}: cannot give it to {user} (run as root)") from exc


def _lookup(root: Path, user: str) -> tuple[int, int] | None:
    """(uid, gid) of `user` on the target machine, or None."""
    if root == Path("/"):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid
    passwd = on_target(root, "/etc/passwd")
    if not passwd.exists():
        return None
    for line in passwd.read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user:
            return int(fields[2]), int(fields[3])
    return None


def _user_command(root: Path, account: Account) -> list[str]:
    """systemd-sysusers where present (idempotent, knows --root), else useradd."""
    sysusers = shutil.which("systemd-sysusers")
    if sysusers:
        line = f'u {account.user} - "{account.description}" {account.home} {NOLOGIN}'
        return [sysusers, *([f"--root={root}"] if root != Path("/") else []),
                "--inline", line]
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    return [useradd, *(["--prefix", str(root)] if root != Path("/") else []), "--system",
            "--user-group", "--home-dir", account.home, "--no-create-home",
            "--shell", NOLOGIN, "--comment", account.description, account.user]


def _create_user(root: Path, command: list[str]) -> None:
    """Run the account tool (a fresh --root needs etc/ for the passwd lock)."""
    on_target(root, "/etc").mkdir(parents=True, exist_ok=True)
    _run(command)


def _run(command: list[str]) -> None:
    """Run a tool; its failure is one clear line."""
    try:
        # The command is built here from constants and a path found by shutil.which.
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError as exc:
        raise InstallError(f"{command[0]}: cannot run ({exc.strerror})") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise InstallError(f"{' '.join(command[:1])} failed: {detail[-1] if detail else '?'}")


# -- the command --------------------------------------------------------------------------
def next_steps(bin_dir: Path, hq: bool) -> list[str]:
    """What the technician runs after the install (printed, never run for them)."""
    if hq:
        keys = "hq-sign.key hq-hpke.key hq.key"
        return [
            "copy HQ's ingest keys (never ca.key) to /etc/edge-hq/keys as root, mode 0600:",
            f"  {keys} hq-sign.pem hq.pem ca.pem",
            "seal the private keys as credentials (TPM2 where present):",
            f"  for k in {keys}; do systemd-creds encrypt --name=$k /etc/edge-hq/keys/$k "
            f"/{CREDSTORE_DIR}/$k; done",
            "  (no systemd-creds: `systemctl edit edge-hq` and use the LoadCredential= lines)",
            "settings (database URL, broker) in /etc/edge-hq/edge-hq.env, then:",
            "  systemctl daemon-reload",
            "  systemctl enable --now edge-hq.service",
        ]
    data, user = NODE_ACCOUNT.home, NODE_ACCOUNT.user
    return [
        "create the node as its service account (once):",
        f"  runuser -u {user} -- {bin_dir}/edge-node --data-dir {data} init --center-id ISB-01",
        "seal the database key as a credential (TPM2 where present), keep an offline copy "
        "of node.key (USB, in the safe), then remove the plain file:",
        f"  systemd-creds encrypt --name={CREDENTIAL_NAME} {data}/node.key "
        f"/{CREDSTORE_DIR}/{CREDENTIAL_NAME}",
        f"  shred -u {data}/node.key",
        f"  (no TPM/systemd-creds: install -m 0600 {data}/node.key /etc/edge-node/node.key, "
        "then `systemctl edit edge-node` and edge-node-backup for the LoadCredential= line)",
        "start it:",
        "  systemctl daemon-reload",
        "  systemctl enable --now edge-node.service edge-node-backup.timer",
        "check it:",
        f"  {doctor_command(bin_dir)}",
    ]


@click.command("install-systemd")
@click.option("--root", "root_dir", type=click.Path(file_okay=False), default="/",
              show_default=True, help="Install into this directory as if it were / "
              "(images, tests).")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Replace unit files that differ from this release's.")
@click.option("--hq", is_flag=True, help="HQ machine: install edge-hq.service and its account "
              "instead of the node's units.")
@click.option("--bin-dir", type=click.Path(file_okay=False), default=None,
              help="Where edge-node/edge-hq are installed (default: this venv's bin).")
@click.option("--units", "units_dir", type=click.Path(file_okay=False), default=None,
              help="Directory of the unit files (default: the repository's systemd/).")
def install_systemd(root_dir: str, dry_run: bool, force: bool, hq: bool, bin_dir: str | None,
                    units_dir: str | None) -> None:
    """Install the systemd units, service account and data directory (as root).

    Creates the system user, /var/lib/edge-node (0700, owned by it) and the
    unit files in /etc/systemd/system, then prints the commands to seal the key
    and start the service. Running it again changes nothing.

    Example: sudo edge-node install-systemd --dry-run
    """
    root = Path(root_dir).resolve()
    if not dry_run and root == Path("/") and os.geteuid() != 0:
        raise InstallError("installing into / needs root: run it with sudo "
                           "(or try --dry-run, or --root DIR)")
    bins = Path(bin_dir).resolve() if bin_dir else default_bin_dir()
    steps = plan_install(root, Path(units_dir) if units_dir else source_dir(), bins, hq, force)
    for step in steps:
        click.echo(("would " if dry_run else "") + step.description)
        if not dry_run:
            step.run()
    if not steps:
        click.echo("already installed: nothing to change")
    if any(part in ("home", "root") for part in bins.parts[1:2]):
        click.echo(f"warning: {bins} is under /home or /root, which ProtectHome=yes hides "
                   "from the service; install the venv under /opt", err=True)
    click.echo("\nnext steps (as root):")
    for line in next_steps(bins, hq):
        click.echo(f"  {line}")
