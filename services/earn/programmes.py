"""Programme files: a folder of YAML files, one per programme version, validated with errors that name the file,
the line and the field. The catalogue reloads the folder when a file changes, so a new version needs no restart."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.earn.domain import Programme

log = logging.getLogger(__name__)


class ProgrammeError(ValueError):
    pass


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


def load_file(path: Path) -> Programme:
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)
        tree = yaml.compose(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ProgrammeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or tree is None:
        raise ProgrammeError(f"{path}: a programme file must be a mapping")
    try:
        return Programme.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"line {_line_of(tree, tuple(e['loc']))}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors())
        raise ProgrammeError(f"{path}: {problems}") from exc


@dataclass
class Catalogue:
    """Every version of every programme in a folder; `at` picks the version in effect at an event's time."""

    folder: Path
    versions: dict[str, list[Programme]] = field(default_factory=dict)
    check_every_s: float = 2.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _stamp: tuple[tuple[str, int, float], ...] = ()
    _checked: float = 0.0

    @classmethod
    def load(cls, folder: Path) -> Catalogue:
        catalogue = cls(folder)
        catalogue.versions = load_folder(folder)
        catalogue._stamp = catalogue._files_stamp()
        catalogue._checked = time.monotonic()
        return catalogue

    def at(self, program_id: str, when: datetime) -> Programme | None:
        """The newest version whose `effective_from` is not after `when`."""
        self.refresh()
        chosen = None
        for programme in self.versions.get(program_id, ()):
            if programme.effective_from <= when:
                chosen = programme
        return chosen

    def __iter__(self) -> Iterator[Programme]:
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
            versions = load_folder(self.folder)
            self._refuse_rewriting_history(versions)
        except ProgrammeError as exc:
            log.error("programme folder not reloaded; the versions in force stay", extra={"error": str(exc)})
            self._stamp = stamp  # report once per change, not on every event
            return False
        self.versions, self._stamp = versions, stamp
        log.info("programmes reloaded", extra={"versions": {p: [v.version for v in vs] for p, vs in versions.items()}})
        return True

    def _refuse_rewriting_history(self, versions: dict[str, list[Programme]]) -> None:
        """A version added while running must take effect in the future: one that starts in the past would judge
        events already credited differently on a replay. Correct the past with adjustments instead."""
        now = self.clock()
        known = {(p.program_id, p.version): p for p in self}
        for programme in (p for found in versions.values() for p in found):
            before = known.get((programme.program_id, programme.version))
            if before is not None and before != programme and before.effective_from <= now:
                raise ProgrammeError(f"programme {programme.program_id!r} version {programme.version} is in effect "
                                     "already and was changed: add a new version instead")
            if before is None and programme.effective_from < now:
                raise ProgrammeError(f"programme {programme.program_id!r} version {programme.version} would take "
                                     f"effect in the past ({programme.effective_from.isoformat()}); give it a "
                                     "future effective_from")

    def _files_stamp(self) -> tuple[tuple[str, int, float], ...]:
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime) for p in sorted(self.folder.glob("*.y*ml")))


def load_folder(folder: Path) -> dict[str, list[Programme]]:
    """Programme versions by programme id, oldest first; two files may not claim the same version."""
    versions: dict[str, list[Programme]] = {}
    seen: dict[tuple[str, int], Path] = {}
    for path in sorted(folder.glob("*.y*ml")):
        programme = load_file(path)
        key = (programme.program_id, programme.version)
        if key in seen:
            raise ProgrammeError(f"{path}: programme {programme.program_id!r} version {programme.version} is "
                                 f"already defined in {seen[key].name}")
        seen[key] = path
        versions.setdefault(programme.program_id, []).append(programme)
    if not versions:
        raise ProgrammeError(f"{folder}: no programme files (*.yaml)")
    for program_id, found in versions.items():
        found.sort(key=lambda p: p.version)
        for older, newer in itertools.pairwise(found):
            if newer.effective_from <= older.effective_from:
                raise ProgrammeError(f"programme {program_id!r}: version {newer.version} takes effect "
                                     f"({newer.effective_from}) no later than version {older.version} "
                                     f"({older.effective_from})")
    return versions
