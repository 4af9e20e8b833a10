"""Programme files: one YAML file per programme, validated with errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from services.earn.domain import Programme


class ProgrammeError(ValueError):
    pass


def load_file(path: Path) -> Programme:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProgrammeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProgrammeError(f"{path}: a programme file must be a mapping")
    try:
        return Programme.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ProgrammeError(f"{path}: {problems}") from exc


def load_folder(folder: Path) -> dict[str, Programme]:
    programmes: dict[str, Programme] = {}
    for path in sorted(folder.glob("*.y*ml")):
        programme = load_file(path)
        if programme.program_id in programmes:
            raise ProgrammeError(f"{path}: programme {programme.program_id!r} is defined twice")
        programmes[programme.program_id] = programme
    if not programmes:
        raise ProgrammeError(f"{folder}: no programme files (*.yaml)")
    return programmes
