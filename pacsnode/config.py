"""Node configuration: one frozen dataclass, built once by the CLI and passed down."""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DUPLICATE_POLICIES = ("reject", "replace")
IDENTITY_POLICIES = ("quarantine", "coerce", "off")
_AET_RE = re.compile(r"^[\x20-\x7e]{1,16}$")
# What may follow AET=HOST:PORT in --remote, and its bound.
REMOTE_OPTIONS = "[;associations=N]"
MAX_ASSOCIATIONS = 16


class ConfigError(ValueError):
    """A bad option or config file value; the message says what to change."""


@dataclass(frozen=True)
class Remote:
    """A peer the node may open associations to (a C-MOVE destination)."""

    ae_title: str
    host: str
    port: int
    # How many associations a C-MOVE to this peer may send over at once.
    associations: int = 1

    @classmethod
    def parse(cls, text: str, options: bool = True) -> "Remote":
        """Parse ``AET=HOST:PORT``, with ``;associations=N`` after it where ``options``."""
        address, *extra = text.split(";")
        aet, sep, addr = address.partition("=")
        host, sep2, port = addr.rpartition(":")
        if not (sep and sep2 and host and port.isdigit()):
            raise ConfigError(f"remote {text!r}: expected AET=HOST:PORT{REMOTE_OPTIONS if options else ''}")
        if extra and not options:
            raise ConfigError(f"remote {text!r}: options ({';'.join(extra)}) are for --remote only")
        remote = cls(validate_ae_title(aet.strip()), host, validate_port(int(port), "remote port"))
        return replace(remote, **dict(_remote_option(text, o) for o in extra))


def _remote_option(text: str, option: str) -> tuple[str, int]:
    name, _, value = option.partition("=")
    name = name.strip()
    if name != "associations":
        raise ConfigError(f"remote {text!r}: unknown option {name!r} (known: associations=N)")
    if not value.strip().isdigit():
        raise ConfigError(f"remote {text!r}: associations={value!r} is not a number")
    if not 1 <= int(value) <= MAX_ASSOCIATIONS:
        raise ConfigError(f"remote {text!r}: associations={int(value)}: use 1 to {MAX_ASSOCIATIONS}")
    return name, int(value)


@dataclass(frozen=True)
class NodeConfig:
    data: Path = Path("./data")
    ae_title: str = "PACSNODE"
    host: str = "127.0.0.1"
    port: int = 11112
    # DICOMweb and the viewer over HTTP on the same host; 0 disables HTTP.
    http_port: int = 8042
    remotes: tuple[Remote, ...] = ()
    # Worker processes accepting on the one port (each with its own index handles).
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Storage-only associations on the asyncio upper layer; off: pynetdicom serves all.
    fast_path: bool = True
    # What to do when a SOP Instance UID arrives again with different content.
    duplicate_policy: str = "reject"
    # Largest P-DATA PDU we accept; larger PDUs mean fewer round trips per instance.
    max_pdu: int = 4 * 1024 * 1024
    # LMDB map size; it is sparse on disk and grows only as the index does.
    index_map_size: int = 64 * 1024**3
    network_timeout: float = 60.0
    dimse_timeout: float = 60.0
    # -- the RIS side (docs/platform.md) --
    # MLLP port for the RIS's HL7 feed (ADT A01/A04/A08/A40, ORM^O01, OMI^O23); 0: none.
    hl7_port: int = 0
    # An instance whose identity contradicts its order: "quarantine", "coerce" or "off".
    identity_policy: str = "quarantine"
    # The RIS's Modality Worklist, asked (off the store path) about unknown accession numbers.
    worklist: Remote | None = None
    # Instance Availability Notification subscribers, and where MPPS messages are forwarded.
    ian: tuple[Remote, ...] = ()
    mpps_forward: tuple[Remote, ...] = ()
    # Without MPPS, a study is complete when no instance has arrived for this long.
    study_stable_seconds: float = 60.0

    @property
    def order_feed(self) -> bool:
        """Whether orders reach us (HL7 or worklist), so that unmatched studies mean something."""
        return bool(self.hl7_port or self.worklist)

    @property
    def coordinates(self) -> bool:
        """Whether a coordinator process is needed (HL7, notifications, forwarding, look-ups)."""
        return bool(self.hl7_port or self.worklist or self.ian or self.mpps_forward)

    def __post_init__(self) -> None:
        validate_ae_title(self.ae_title)
        validate_port(self.port, "port")
        if self.http_port != 0:
            validate_port(self.http_port, "http port")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"workers {self.workers}: use 1 to 256")
        if self.hl7_port:
            validate_port(self.hl7_port, "hl7-port")
            if self.hl7_port == self.port:
                raise ConfigError("hl7-port and port must differ")
        if self.identity_policy not in IDENTITY_POLICIES:
            raise ConfigError(f"identity_policy {self.identity_policy!r}: use one of {', '.join(IDENTITY_POLICIES)}")
        if not self.study_stable_seconds > 0:
            raise ConfigError("study_stable_seconds must be > 0")
        if self.duplicate_policy not in DUPLICATE_POLICIES:
            raise ConfigError(
                f"duplicate_policy {self.duplicate_policy!r}: use one of {', '.join(DUPLICATE_POLICIES)}"
            )

    def remote(self, ae_title: str) -> Remote | None:
        for remote in self.remotes:
            if remote.ae_title == ae_title.strip():
                return remote
        return None


def validate_ae_title(aet: str) -> str:
    if not _AET_RE.match(aet) or aet.strip() == "" or "\\" in aet:
        raise ConfigError(f"AE title {aet!r}: 1 to 16 printable characters, no backslash")
    return aet


def validate_port(port: int, what: str) -> int:
    if not 0 < port < 65536:
        raise ConfigError(f"{what} {port}: must be between 1 and 65535")
    return port


def load_toml(path: Path) -> dict:
    """Read a TOML config file: the same keys as the long options (``ae_title``, ``remote`` ...)."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    known = {f.name for f in fields(NodeConfig)} | {"remote"}
    unknown = sorted(set(raw) - known - {k.replace("_", "-") for k in known})
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {', '.join(unknown)}")
    return {k.replace("-", "_"): v for k, v in raw.items()}
