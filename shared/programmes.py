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

from shared import deltas
from shared.experiments import Arm, Experiment, arm_of
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
BASED_ON = "based_on"
DELTA_KEYS = frozenset({BASED_ON, deltas.REMOVE})  # a delta's own keys, gone once it is merged
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


@dataclass(frozen=True)
class _Source:
    """One programme file as written: its parsed mapping and its YAML tree (for the lines of errors)."""

    name: str
    raw: dict[str, Any]
    tree: yaml.Node

    def key(self) -> tuple[str, int] | None:
        program_id, version = self.raw.get("program_id"), self.raw.get("version")
        if isinstance(program_id, str) and isinstance(version, int) and not isinstance(version, bool):
            return program_id, version
        return None

    def line(self, key: str) -> int | None:
        return _line_of(self.tree, (key,))


@dataclass(frozen=True)
class _Resolved:
    """A version as every service reads it: its file's content laid over the versions it is `based_on`."""

    source: _Source
    raw: dict[str, Any]  # merged, without `based_on` and `remove`
    base: _Resolved | None = None

    def chain(self) -> Iterator[_Source]:
        node: _Resolved | None = self
        while node is not None:
            yield node.source
            node = node.base

    def where(self, loc: tuple[Any, ...], within: tuple[Any, ...] = ()) -> str:
        """`line N` of the field at `loc` (of the merged mapping): in this file when it states the field, else in the
        file of the version it was inherited from, said so."""
        path = [*within, *_by_id(self.raw if not within else _at(self.raw, within), loc)]
        best: tuple[int, int, _Source] | None = None
        for source in self.chain():
            depth, line = _find(source.raw, source.tree, path)
            if best is None or depth > best[0]:  # the nearest file that goes deepest: the one stating the field
                best = (depth, line, source)
        assert best is not None
        _, line, source = best
        if source is self.source:
            return f"line {line}"
        version = source.raw.get("version")
        return f"line {line} of {Path(source.name).name} (version {version}, which this version is based on)"


def _at(raw: Any, path: tuple[Any, ...]) -> Any:
    node = raw
    for key in path:
        if isinstance(key, tuple) and isinstance(node, list):
            node = next((item for item in node if deltas.id_of(item) == key[1]), None)
        elif isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return None
    return node


def _by_id(raw: Any, loc: tuple[Any, ...]) -> list[Any]:
    """`loc` with each index into a list of rules replaced by ("id", the item's id), so it finds the same item in
    a delta (where it sits at another index, or alone)."""
    path: list[Any] = []
    node = raw
    for key in loc:
        if isinstance(node, list) and isinstance(key, int) and key < len(node):
            ident = deltas.id_of(node[key])
            path.append(("id", ident) if ident is not None else key)
            node = node[key]
        elif isinstance(node, dict) and key in node:
            path.append(key)
            node = node[key]
        else:
            path.append(key)
            node = None
    return path


def _find(raw: Any, tree: yaml.Node, path: list[Any]) -> tuple[int, int]:
    """How far down `path` goes in one file, and the line it reaches."""
    node, depth, line = raw, 0, tree.start_mark.line + 1
    for key in path:
        step: Any = None
        if isinstance(key, tuple) and isinstance(node, list):
            step = next((i for i, item in enumerate(node) if deltas.id_of(item) == key[1]), None)
        elif (isinstance(node, list) and isinstance(key, int) and key < len(node)) or (
                isinstance(node, dict) and not isinstance(key, tuple) and key in node):
            step = key
        if step is None:
            break
        if isinstance(tree, yaml.MappingNode):
            found = next((v for k, v in tree.value if getattr(k, "value", None) == str(step)), None)
        elif isinstance(tree, yaml.SequenceNode) and isinstance(step, int) and step < len(tree.value):
            found = tree.value[step]
        else:
            found = None
        if found is None:
            break
        node, tree, depth, line = node[step], found, depth + 1, found.start_mark.line + 1
    return depth, line


def _parse(text: str, name: str) -> _Source:
    try:
        raw = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ProgrammeError(f"{name}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or tree is None:
        raise ProgrammeError(f"{name}: a programme file must be a mapping")
    unknown = [key for key in raw if key not in HEADER and key not in SECTIONS and key not in DELTA_KEYS]
    if unknown:
        raise ProgrammeError("; ".join(
            f"{name}: line {_line_of(tree, (key,))}: {key}: not a section of a programme (known: "
            f"{', '.join(sorted(SECTIONS))})" for key in unknown))
    if deltas.REMOVE in raw and BASED_ON not in raw:
        raise ProgrammeError(f"{name}: line {_line_of(tree, (deltas.REMOVE,))}: remove: only a version based_on "
                             f"another may remove what that one has")
    return _Source(name, raw, tree)


def _read(path: Path) -> _Source:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgrammeError(f"{path}: not valid YAML: {exc}") from exc
    return _parse(text, str(path))


def _resolve(sources: list[_Source], bases: Iterable[_Source] = ()) -> list[_Resolved]:
    """Each of `sources` merged over the versions it is `based_on` (found among `sources`, else among `bases`),
    in the order given. Two of `sources` may not claim one version."""
    mine: dict[tuple[str, int], _Source] = {}
    for source in sources:
        key = source.key()
        if key is None:
            continue
        if key in mine:
            raise ProgrammeError(f"{source.name}: programme {key[0]!r} version {key[1]} is already defined in "
                                 f"{Path(mine[key].name).name}")
        mine[key] = source
    known = dict(mine)
    for base in bases:
        key = base.key()
        if key is not None and key not in known:
            known[key] = base
    done: dict[str, _Resolved] = {}

    def resolved(source: _Source, chain: tuple[_Source, ...]) -> _Resolved:
        if source.name in done:
            return done[source.name]
        if BASED_ON not in source.raw:
            done[source.name] = _Resolved(source, source.raw)
            return done[source.name]
        at = f"{source.name}: line {source.line(BASED_ON)}: based_on"
        based_on, program_id = source.raw[BASED_ON], source.raw.get("program_id")
        if not isinstance(based_on, int) or isinstance(based_on, bool) or based_on < 1:
            raise ProgrammeError(f"{at}: {based_on!r} is not a version number")
        if not isinstance(program_id, str):
            raise ProgrammeError(f"{at}: a version based_on another names its program_id")
        for key in ("version", "effective_from"):
            if key not in source.raw:
                raise ProgrammeError(f"{at}: a version based_on another states its own {key}")
        base = known.get((program_id, based_on))
        if base is None:
            others = sorted(p for p, v in known if v == based_on and p != program_id)
            theirs = (f"; version {based_on} of {', '.join(map(repr, others))} is another programme's, and a "
                      f"version is based on its own programme's") if others else ""
            have = sorted(v for p, v in known if p == program_id and v != source.raw.get("version"))
            raise ProgrammeError(f"{at}: programme {program_id!r} has no version {based_on} (its versions: "
                                 f"{', '.join(map(str, have)) or 'none'}){theirs}")
        if base in chain or base is source:
            cycle = " → ".join(str(s.raw.get("version")) for s in (*chain, source, base))
            raise ProgrammeError(f"{at}: versions based on each other in a cycle ({program_id!r} {cycle})")
        below = resolved(base, (*chain, source))
        try:
            merged = deltas.merge(below.raw, {k: v for k, v in source.raw.items() if k != BASED_ON})
        except deltas.DeltaError as exc:
            raise ProgrammeError(f"{source.name}: line {source.line(deltas.REMOVE)}: {exc}") from exc
        done[source.name] = _Resolved(source, merged, below)
        return done[source.name]

    return [resolved(source, ()) for source in sources]


def _mine(raw: dict[str, Any], model: type[P]) -> dict[str, Any]:
    return {key: value for key, value in raw.items() if key in HEADER or key in model.model_fields}


def _validated(version: _Resolved, model: type[P]) -> P:
    try:
        return model.model_validate(_mine(version.raw, model))
    except ValidationError as exc:
        problems = "; ".join(f"{version.where(tuple(e['loc']))}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ProgrammeError(f"{version.source.name}: {problems}") from exc


def _variant(raw: dict[str, Any], arms: Iterable[Arm]) -> dict[str, Any]:
    for arm in arms:
        if arm.overrides:
            raw = deltas.merge(raw, arm.overrides)
    return raw


def _check_arms(version: _Resolved, programme: ProgrammeVersion, model: type[P]) -> None:
    """Every arm's variant must be a valid version for `model`: a bad override is refused at load, never met on a
    member's event."""
    for experiment in programme.experiments:
        for index, arm in enumerate(experiment.arms):
            if not arm.overrides:
                continue
            within = ("experiments", ("id", experiment.experiment_id), "arms", index, "overrides")
            named = f"{version.source.name}: experiment {experiment.experiment_id!r} arm {arm.name!r}"
            try:
                model.model_validate(_mine(_variant(version.raw, [arm]), model))
            except deltas.DeltaError as exc:
                raise ProgrammeError(f"{named}: {version.where((), within)}: {exc}") from exc
            except ValidationError as exc:
                problems = "; ".join(
                    f"{version.where(_override_loc(e['loc'], arm.overrides), within)}: "
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                raise ProgrammeError(f"{named}: {problems}") from exc


def _override_loc(loc: tuple[Any, ...], overrides: dict[str, Any]) -> tuple[Any, ...]:
    """The part of an error's path the overrides state (list indices of the merged version do not apply there)."""
    node: Any = overrides
    kept: list[Any] = []
    for key in loc:
        if isinstance(node, dict) and key in node:
            kept.append(key)
            node = node[key]
        else:
            break
    return tuple(kept)


@dataclass(frozen=True)
class _Loaded(Generic[P]):
    versions: dict[str, list[P]]
    raws: dict[tuple[str, int], dict[str, Any]]
    prints: dict[tuple[str, int], Fingerprint]


def _lent(sources: list[_Source], files: list[Path], bases: Iterable[Path]) -> list[_Source]:
    """The files of `bases` that may lend a base: read only when a file is `based_on` another, and one that does
    not parse is left out (it is no version; the error is its own, not this file's)."""
    if not any(BASED_ON in source.raw for source in sources):
        return []
    given = {path.resolve() for path in files}
    lent = []
    for path in bases:
        if path.resolve() in given:
            continue
        try:
            lent.append(_read(path))
        except ProgrammeError:
            continue
    return lent


def _load(paths: Iterable[Path], model: type[P], bases: Iterable[Path] = ()) -> _Loaded[P]:
    """The files as one folder: each valid, its arms' variants too, no version claimed twice, later versions taking
    effect later; `bases` only lend the versions the files are `based_on`."""
    files = list(paths)
    sources = [_read(path) for path in files]
    resolved = _resolve(sources, _lent(sources, files, bases))
    versions: dict[str, list[P]] = {}
    raws: dict[tuple[str, int], dict[str, Any]] = {}
    prints: dict[tuple[str, int], Fingerprint] = {}
    for one in resolved:
        programme = _validated(one, model)
        _check_arms(one, programme, model)
        key = (programme.program_id, programme.version)
        raws[key] = one.raw
        prints[key] = _fingerprint_of(one.raw, Path(one.source.name).name)
        versions.setdefault(programme.program_id, []).append(programme)
    for program_id, found in versions.items():
        found.sort(key=lambda p: p.version)
        for older, newer in itertools.pairwise(found):
            if newer.effective_from <= older.effective_from:
                raise ProgrammeError(f"programme {program_id!r}: version {newer.version} takes effect "
                                     f"({newer.effective_from}) no later than version {older.version} "
                                     f"({older.effective_from})")
    return _Loaded(versions, raws, prints)


def _siblings(path: Path) -> list[Path]:
    return sorted(path.parent.glob("*.y*ml"))


def load_file(path: Path, model: type[P], bases: Iterable[Path] | None = None) -> P:
    """One version as `model` sees it: the header and `model`'s own sections, merged over the version it is
    `based_on` (found among `bases`, by default the files beside it); other known sections are left to their
    services, an unknown one is an error."""
    loaded = _load([path], model, _siblings(path) if bases is None else bases)
    return next(iter(loaded.versions.values()))[0]


def raw_file(path: Path, bases: Iterable[Path] | None = None) -> dict[str, Any]:
    """One version's whole mapping as every service reads it (merged over its `based_on`)."""
    source = _read(path)
    return _resolve([source], _lent([source], [path], _siblings(path) if bases is None else bases))[0].raw


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


def fingerprint(text: str, name: str, bases: Iterable[tuple[str, str]] = ()) -> Fingerprint:
    """The fingerprint of one programme file's text (`name` for errors), merged over the version it is `based_on`
    among `bases` ((name, text) of other files)."""
    found = fingerprints_of([(name, text)], bases)
    return next(iter(found.values()))


def fingerprints(paths: Iterable[Path], bases: Iterable[Path] = ()) -> dict[tuple[str, int], Fingerprint]:
    """The fingerprints of programme files, by (programme, version): of their merged content, so a change to a base
    is a change to every version based on it."""
    files = list(paths)
    sources = [_read(path) for path in files]
    return _prints(_resolve(sources, _lent(sources, files, bases)))


def fingerprints_of(texts: Iterable[tuple[str, str]], bases: Iterable[tuple[str, str]] = ()
                    ) -> dict[tuple[str, int], Fingerprint]:
    """`fingerprints` of files' texts ((name, text): a git revision's, say)."""
    return _prints(_resolve([_parse(text, name) for name, text in texts],
                            [_parse(text, name) for name, text in bases]))


def _prints(resolved: list[_Resolved]) -> dict[tuple[str, int], Fingerprint]:
    return {(one.program_id, one.version): one
            for one in (_fingerprint_of(r.raw, Path(r.source.name).name) for r in resolved)}


def _fingerprint_of(raw: dict[str, Any], name: str) -> Fingerprint:
    try:
        header = ProgrammeVersion.model_validate({k: v for k, v in raw.items() if k in HEADER})
    except ValidationError as exc:
        raise ProgrammeError(f"{name}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    content = json.dumps(raw, sort_keys=True, default=str, ensure_ascii=False)
    return Fingerprint(header.program_id, header.version, header.effective_from,
                       hashlib.sha256(content.encode()).hexdigest(), name)


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
    # Each version's whole mapping, merged over its `based_on`: what an experiment arm's overrides are laid over.
    raws: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    _variants: dict[tuple[str, int, tuple[tuple[str, str], ...]], P] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path, model: type[P]) -> Catalogue[P]:
        catalogue = cls(folder, model)
        loaded = _load(catalogue._files(), model)
        if not loaded.versions:
            raise ProgrammeError(f"{folder}: no programme files (*.yaml)")
        catalogue.versions, catalogue.raws, catalogue._prints = loaded.versions, loaded.raws, loaded.prints
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

    def for_member(self, program_id: str, member_id: str, when: datetime) -> tuple[P, dict[str, str]]:
        """The version in force at `when` as it applies to one member: with their arm's overrides in every
        experiment of the version running at `when`, laid in the order the experiments are listed; and those arms
        by experiment id. No experiment running: the version itself and {}. Built once per (version, arms)."""
        version = self.in_force(program_id, when)
        running = [e for e in version.experiments if e.running(when)]
        if not running:
            return version, {}
        arms = [arm_of(program_id, e, member_id) for e in running]
        named = {e.experiment_id: arm.name for e, arm in zip(running, arms, strict=True)}
        if not any(arm.overrides for arm in arms):
            return version, named
        key = (program_id, version.version, tuple(named.items()))
        variant = self._variants.get(key)
        if variant is None:
            raw = self.raws.get((program_id, version.version))
            if raw is None:  # a catalogue put together by hand, without its files' mappings
                raw = version.model_dump(mode="json", exclude_unset=True)
            variant = self.model.model_validate(_mine(_variant(raw, arms), self.model))
            self._variants[key] = variant
        return variant, named

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
            loaded = _load(self._files(), self.model)
            if not loaded.versions:
                raise ProgrammeError(f"{self.folder}: no programme files (*.yaml)")
            versions, prints = loaded.versions, loaded.prints
            self._refuse_rewriting_history(prints)
        except ProgrammeError as exc:
            log.error("programme folder not reloaded; the versions in force stay", extra={"error": str(exc)})
            self._stamp = stamp  # report once per change, not on every event
            self.last_reload = Reload(self.clock(), False, str(exc)[:1000])
            self.reloads[False] += 1
            return False
        self.versions, self._stamp, self._prints, self.raws = versions, stamp, prints, loaded.raws
        self._variants = {}
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


def load_files(paths: Iterable[Path], model: type[P], bases: Iterable[Path] = ()) -> dict[str, list[P]]:
    """The files as one folder: each valid (merged over its `based_on`, found among the files or `bases`), no
    version claimed twice, later versions taking effect later."""
    return _load(paths, model, bases).versions
