"""Programme files: a folder of YAML files, one per programme version, validated with errors that name the file,
the line and the field. The catalogue reloads the folder when a file changes, so a new version needs no restart.

One file holds every section of a version; each service reads the sections it owns, as a model of its own that
extends `ProgrammeVersion` (the header every version has) with those sections. A key that is neither the header's
nor a section of `SECTIONS` is an error in every service, so a misspelt section is never silently ignored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.experiments import Experiment
from shared.refusal import Refusal

log = logging.getLogger(__name__)
DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / "programmes"

# Every section a programme file may have, and the service that owns (reads and validates) it.
SECTIONS: dict[str, str] = {
    "purchase": "earn", "pending": "earn", "expiry": "earn", "activity": "earn", "caps": "earn", "budget": "earn",
    "tiers": "tiers",
    "rewards": "redemption", "redemption": "redemption",
    "referral": "referral",
}


class ProgrammeVersion(BaseModel):
    """The header of every programme version. Versions of a programme share `program_id`; an event is judged by
    the version in effect at its own time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    program_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    name: str
    version: int = Field(ge=1)
    effective_from: datetime
    timezone: str = "UTC"
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")  # None: any currency, 1:1
    # What one point is worth in `currency` (0.01: 100 points to the yuan), for the liability the points held are;
    # None: the programme puts no money value on its points (an employee scheme, say).
    point_value: Decimal | None = Field(default=None, gt=0)
    # A/B arms every service applies to its members' events (shared/experiments.py); read by all, so in the header.
    experiments: list[Experiment] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


HEADER = frozenset(ProgrammeVersion.model_fields)
P = TypeVar("P", bound=ProgrammeVersion)


class ProgrammeError(ValueError):
    pass


class UnknownProgram(Refusal):
    """No version of the programme is in effect (or no file defines it): 404 at the HTTP edge, a DLQ reason on
    Kafka. One wording everywhere: `Catalogue.why_not`."""

    def __init__(self, detail: str) -> None:
        super().__init__("unknown_program", detail)


def _line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the field at `loc` in the parsed YAML, as far down as the path goes."""
    line = node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            found = node.value[key]
        else:
            found = None
        if found is None:
            break
        node = found
        line = node.start_mark.line + 1
    return line


def load_file(path: Path, model: type[P]) -> P:
    """One version as `model` sees it: the header and `model`'s own sections; other known sections are left to
    their services, an unknown one is an error."""
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)
        tree = yaml.compose(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProgrammeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or tree is None:
        raise ProgrammeError(f"{path}: a programme file must be a mapping")
    unknown = [key for key in raw if key not in HEADER and key not in SECTIONS]
    if unknown:
        raise ProgrammeError("; ".join(
            f"{path}: line {_line_of(tree, (key,))}: {key}: not a section of a programme (known: "
            f"{', '.join(sorted(SECTIONS))})" for key in unknown))
    mine = {key: value for key, value in raw.items() if key in HEADER or key in model.model_fields}
    try:
        return model.model_validate(mine)
    except ValidationError as exc:
        problems = "; ".join(
            f"line {_line_of(tree, tuple(e['loc']))}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors())
        raise ProgrammeError(f"{path}: {problems}") from exc


@dataclass(frozen=True)
class Fingerprint:
    """What a version is, whichever service reads it: its header and a digest of every section of its file (the
    parsed content, so a comment or a reindent is no change). Services judge a reload by these, never by their
    own model of the file, so a change to any section is the same change to every service."""

    program_id: str
    version: int
    effective_from: datetime
    digest: str
    file: str


def fingerprint(text: str, name: str) -> Fingerprint:
    """The fingerprint of one programme file's text (`name` for errors)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProgrammeError(f"{name}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProgrammeError(f"{name}: a programme file must be a mapping")
    try:
        header = ProgrammeVersion.model_validate({k: v for k, v in raw.items() if k in HEADER})
    except ValidationError as exc:
        raise ProgrammeError(f"{name}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    content = json.dumps(raw, sort_keys=True, default=str, ensure_ascii=False)
    return Fingerprint(header.program_id, header.version, header.effective_from,
                       hashlib.sha256(content.encode()).hexdigest(), name)


def fingerprints(paths: Iterable[Path]) -> dict[tuple[str, int], Fingerprint]:
    """The fingerprints of programme files, by (programme, version)."""
    found = {}
    for path in paths:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ProgrammeError(f"{path}: not valid YAML: {exc}") from exc
        one = fingerprint(text, path.name)
        found[(one.program_id, one.version)] = one
    return found


def history_rewrites(before: dict[tuple[str, int], Fingerprint], after: dict[tuple[str, int], Fingerprint],
                     now: datetime) -> list[str]:
    """Why the versions `after` may not replace the versions in force `before` at `now`: a version in effect
    already may not change, and a new one may not take effect in the past (either would judge events already
    credited differently on a replay; correct the past with adjustments instead). Empty: the change is taken."""
    problems = []
    for key, new in sorted(after.items()):
        old = before.get(key)
        changed = old is None or old.digest != new.digest
        if old is not None and changed and old.effective_from <= now:
            problems.append(f"{new.file}: programme {new.program_id!r} version {new.version} is in effect already "
                            f"(since {old.effective_from.isoformat()}) and was changed: add a new version instead")
        elif changed and new.effective_from < now:
            problems.append(f"{new.file}: programme {new.program_id!r} version {new.version} would take effect in "
                            f"the past ({new.effective_from.isoformat()}); give it a future effective_from")
    return problems


@dataclass(frozen=True)
class Reload:
    """The last time a catalogue looked at its folder after a change: when, and whether it took the files."""

    at: datetime
    ok: bool
    detail: str


@dataclass
class Catalogue(Generic[P]):
    """Every version of every programme in a folder, as `model` reads them; `at` picks the version in effect at an
    event's time."""

    folder: Path
    model: type[P]
    versions: dict[str, list[P]] = field(default_factory=dict)
    check_every_s: float = 2.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    last_reload: Reload | None = None
    reloads: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})  # by outcome, since start
    _stamp: tuple[tuple[str, int, float], ...] = ()
    _checked: float = 0.0
    _prints: dict[tuple[str, int], Fingerprint] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path, model: type[P]) -> Catalogue[P]:
        catalogue = cls(folder, model)
        catalogue.versions = load_folder(folder, model)
        catalogue._prints = fingerprints(catalogue._files())
        catalogue._stamp = catalogue._files_stamp()
        catalogue._checked = time.monotonic()
        catalogue.last_reload = Reload(catalogue.clock(), True, "loaded at start")
        return catalogue

    def at(self, program_id: str, when: datetime) -> P | None:
        """The newest version whose `effective_from` is not after `when`."""
        self.refresh()
        chosen = None
        for programme in self.versions.get(program_id, ()):
            if programme.effective_from <= when:
                chosen = programme
        return chosen

    def in_force(self, program_id: str, when: datetime) -> P:
        """The version in effect at `when`; `UnknownProgram` (the one `unknown_program` refusal) when there is none."""
        found = self.at(program_id, when)
        if found is None:
            raise UnknownProgram(self.why_not(program_id, when))
        return found

    def why_not(self, program_id: str, when: datetime) -> str:
        """Why `at(program_id, when)` found no version: the detail of an `unknown_program` refusal."""
        if program_id in self.versions:
            return f"programme {program_id!r} was not in effect at {when.isoformat(timespec='seconds')}"
        known = ", ".join(sorted(self.versions)) or "none"
        return f"no programme {program_id!r} (the programmes are {known})"

    def __iter__(self) -> Iterator[P]:
        for versions in self.versions.values():
            yield from versions

    def refresh(self) -> bool:
        """Reload when a file was added, changed or removed; a broken folder keeps the versions in force."""
        if time.monotonic() - self._checked < self.check_every_s:
            return False
        self._checked = time.monotonic()
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        try:
            versions = load_folder(self.folder, self.model)
            prints = fingerprints(self._files())
            self._refuse_rewriting_history(prints)
        except ProgrammeError as exc:
            log.error("programme folder not reloaded; the versions in force stay", extra={"error": str(exc)})
            self._stamp = stamp  # report once per change, not on every event
            self.last_reload = Reload(self.clock(), False, str(exc)[:1000])
            self.reloads[False] += 1
            return False
        self.versions, self._stamp, self._prints = versions, stamp, prints
        log.info("programmes reloaded", extra={"versions": {p: [v.version for v in vs] for p, vs in versions.items()}})
        self.last_reload = Reload(self.clock(), True, "reloaded")
        self.reloads[True] += 1
        return True

    def _refuse_rewriting_history(self, prints: dict[tuple[str, int], Fingerprint]) -> None:
        """Judged on the whole files, not on this service's sections, so every service takes or refuses a change
        alike (`jifen programme check` makes the same judgement)."""
        problems = history_rewrites(self._prints, prints, self.clock())
        if problems:
            raise ProgrammeError("; ".join(problems))

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("*.y*ml"))

    def _files_stamp(self) -> tuple[tuple[str, int, float], ...]:
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime) for p in self._files())


def load_folder(folder: Path, model: type[P]) -> dict[str, list[P]]:
    """Programme versions by programme id, oldest first; two files may not claim the same version."""
    versions = load_files(sorted(folder.glob("*.y*ml")), model)
    if not versions:
        raise ProgrammeError(f"{folder}: no programme files (*.yaml)")
    return versions


def load_files(paths: Iterable[Path], model: type[P]) -> dict[str, list[P]]:
    """The files as one folder: each valid, no version claimed twice, later versions taking effect later."""
    versions: dict[str, list[P]] = {}
    seen: dict[tuple[str, int], Path] = {}
    for path in paths:
        programme = load_file(path, model)
        key = (programme.program_id, programme.version)
        if key in seen:
            raise ProgrammeError(f"{path}: programme {programme.program_id!r} version {programme.version} is "
                                 f"already defined in {seen[key].name}")
        seen[key] = path
        versions.setdefault(programme.program_id, []).append(programme)
    for program_id, found in versions.items():
        found.sort(key=lambda p: p.version)
        for older, newer in itertools.pairwise(found):
            if newer.effective_from <= older.effective_from:
                raise ProgrammeError(f"programme {program_id!r}: version {newer.version} takes effect "
                                     f"({newer.effective_from}) no later than version {older.version} "
                                     f"({older.effective_from})")
    return versions
