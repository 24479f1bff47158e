"""Node configuration: frozen dataclasses, built once by the CLI and passed down."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from pacsnode.config import validate_ae_title, validate_port
from risnode.errors import ConfigError

COMPLETION_POLICIES = ("standalone", "pacs")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Endpoint:
    """An HL7 peer reached over MLLP."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        host, sep, port = str(text).rpartition(":")
        if not (sep and host and port.isdigit()):
            raise ConfigError(f"endpoint {text!r}: expected HOST:PORT")
        return cls(host, validate_port(int(port), "endpoint port"))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Schedule:
    """One modality's bookable slots; ``station_ae`` fills Scheduled Station AE Title."""

    modality: str
    station_ae: str = ""
    station_name: str = ""
    location: str = ""
    open: str = "08:00"
    close: str = "18:00"
    slot_minutes: int = 20
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)

    def __post_init__(self) -> None:
        if self.station_ae:
            validate_ae_title(self.station_ae)
        if not 1 <= self.slot_minutes <= 24 * 60:
            raise ConfigError(f"schedule {self.modality}: slot_minutes must be 1..1440")
        if not (_minutes(self.open) < _minutes(self.close)):
            raise ConfigError(f"schedule {self.modality}: open {self.open} must be before close {self.close}")
        if not self.weekdays or any(not 0 <= d <= 6 for d in self.weekdays):
            raise ConfigError(f"schedule {self.modality}: weekdays must name at least one of {', '.join(WEEKDAYS)}")

    @classmethod
    def from_toml(cls, modality: str, raw: dict) -> "Schedule":
        raw = {k.replace("-", "_"): v for k, v in raw.items()}
        known = {f.name for f in fields(cls)} - {"modality"}
        if set(raw) - known:
            raise ConfigError(f"schedule {modality}: unknown keys {', '.join(sorted(set(raw) - known))}")
        if "weekdays" in raw:
            raw["weekdays"] = tuple(_weekday(d) for d in raw["weekdays"])
        return cls(modality.upper(), **raw)


def _weekday(name: str | int) -> int:
    if isinstance(name, int):
        return name
    try:
        return WEEKDAYS.index(str(name).lower()[:3])
    except ValueError:
        raise ConfigError(f"weekday {name!r}: use one of {', '.join(WEEKDAYS)}") from None


def _minutes(hhmm: str) -> int:
    try:
        hours, minutes = (int(x) for x in hhmm.split(":"))
    except ValueError:
        raise ConfigError(f"time {hhmm!r}: expected HH:MM") from None
    if not (0 <= hours <= 24 and 0 <= minutes < 60):
        raise ConfigError(f"time {hhmm!r}: expected HH:MM")
    return hours * 60 + minutes


@dataclass(frozen=True)
class RisConfig:
    data: Path = Path("./data/ris")
    host: str = "127.0.0.1"
    hl7_port: int = 2575
    ae_title: str = "RISNODE"
    port: int = 11113
    http_port: int = 8043
    # Where ORU^R01 results go; DFT^P03 charges go to ``billing``, or here when it is unset.
    ehr: Endpoint | None = None
    billing: Endpoint | None = None
    # The PACS's HL7 port: orders (OMI^O23), demographics (ADT^A08) and merges (ADT^A40) go there.
    pacs_hl7: Endpoint | None = None
    # MSH-3/MSH-4 of every message we send (ACKs included).
    application: str = "RISNODE"
    facility: str = "RADIOLOGY"
    # {YYYY} {YY} {MM} {DD} and {SEQ:n} (a counter per rendered prefix, at least n digits).
    accession_pattern: str = "{YY}{MM}{DD}{SEQ:5}"
    # With no Scheduled Station AE Title in the query, offer only the calling AE title's steps.
    mwl_match_calling_aet: bool = False
    # Who decides that an exam is complete: MPPS COMPLETED ("standalone") or the PACS ("pacs").
    completion_policy: str = "standalone"
    schedules: tuple[Schedule, ...] = ()
    max_message_bytes: int = 1024 * 1024
    # Outbound retries: the delay doubles from retry_initial up to retry_max seconds.
    retry_initial: float = 1.0
    retry_max: float = 60.0
    ack_timeout: float = 10.0
    map_size: int = 4 * 1024**3
    network_timeout: float = 60.0

    def __post_init__(self) -> None:
        validate_ae_title(self.ae_title)
        ports = {"hl7_port": self.hl7_port, "port": self.port, "http_port": self.http_port}
        for name, value in ports.items():
            validate_port(value, name.replace("_", "-"))
        if len(set(ports.values())) != len(ports):
            raise ConfigError("hl7-port, port and http-port must be three different ports")
        if self.completion_policy not in COMPLETION_POLICIES:
            raise ConfigError(f"completion_policy {self.completion_policy!r}: use one of {', '.join(COMPLETION_POLICIES)}")
        if not 0 < self.retry_initial <= self.retry_max:
            raise ConfigError("retry_initial must be > 0 and <= retry_max")
        if self.max_message_bytes < 1024:
            raise ConfigError("max_message_bytes must be at least 1024")
        from risnode.services.accession import check_pattern

        check_pattern(self.accession_pattern)

    @property
    def billing_endpoint(self) -> Endpoint | None:
        return self.billing or self.ehr

    def schedule(self, modality: str) -> Schedule:
        for schedule in self.schedules:
            if schedule.modality == modality.upper():
                return schedule
        return Schedule(modality.upper())


# Keys that name a value of another type in TOML than in RisConfig.
_TOML_ONLY = {"schedule", "station"}


def load_toml(path: Path) -> dict:
    """Read a TOML file with the long options' keys (``hl7_port`` or ``hl7-port``) and
    ``[schedule.CT]`` tables (station_ae, open, close, slot_minutes, weekdays)."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    known = {f.name for f in fields(RisConfig)} - {"schedules"} | _TOML_ONLY
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {', '.join(unknown)}")
    return values


def build(values: dict) -> RisConfig:
    """RisConfig from merged TOML and option values (strings as on the command line)."""
    values = dict(values)
    schedules = {m.upper(): Schedule.from_toml(m, t) for m, t in (values.pop("schedule", None) or {}).items()}
    for item in values.pop("station", None) or []:
        modality, sep, aet = str(item).partition("=")
        if not (sep and modality and aet):
            raise ConfigError(f"station {item!r}: expected MODALITY=AE_TITLE")
        base = schedules.get(modality.upper(), Schedule(modality.upper()))
        schedules[base.modality] = Schedule(**{**_as_dict(base), "station_ae": aet})
    values["schedules"] = tuple(schedules.values())
    for key in ("ehr", "billing", "pacs_hl7"):
        if key in values:
            values[key] = Endpoint.parse(values[key]) if values[key] else None
    if "data" in values:
        values["data"] = Path(values["data"])
    try:
        return RisConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def _as_dict(schedule: Schedule) -> dict:
    return {f.name: getattr(schedule, f.name) for f in fields(schedule)}
