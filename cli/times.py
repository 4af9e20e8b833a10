"""Times as the CLI prints them: in the programme's time zone, to the second, so one line never mixes zones or
shows microseconds (`2026-11-24T16:00:02+08:00`, ISO 8601 as the services write them). A time that belongs to no
programme (an API key's) is in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from shared.programmes import ProgrammeError, ProgrammeVersion, load_folder
from shared.settings import Settings


def programme_zone(program_id: str, folder: Path | None = None, at: datetime | None = None) -> tzinfo:
    """The time zone of the programme's version in force at `at` (now), from the programme folder; UTC when the
    folder or the programme is not there."""
    try:
        versions = load_folder(folder or Settings().programmes_dir, ProgrammeVersion).get(program_id, [])
    except (ProgrammeError, OSError):
        return UTC
    when = at or datetime.now(UTC)
    chosen = next((v for v in reversed(versions) if v.effective_from <= when), versions[0] if versions else None)
    return ZoneInfo(chosen.timezone) if chosen else UTC


def shown(when: datetime | str | None, zone: tzinfo = UTC, none: str = "-") -> str:
    """`when` (a datetime, or an ISO 8601 string from an HTTP answer) in `zone`, to the second."""
    if when is None or when == "":
        return none
    moment = datetime.fromisoformat(when) if isinstance(when, str) else when
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).replace(microsecond=0).isoformat()
