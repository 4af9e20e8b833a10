"""`jifen programme check PATH...`: validate programme files (or folders) as every service would load them, and
judge them against the versions in force as every service judges a reload."""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml

from cli import points
from cli.times import shown
from services.earn.programme import Programme as EarnProgramme
from services.redemption.programme import RedemptionProgramme
from services.referral.programme import ReferralProgramme
from services.tiers.programme import TiersProgramme
from shared.programmes import (
    SECTIONS,
    Fingerprint,
    ProgrammeError,
    ProgrammeVersion,
    fingerprint,
    fingerprints,
    history_rewrites,
    load_file,
    load_files,
    load_folder,
)

TIERS_URL = "http://127.0.0.1:8104"

# Each service's view of a programme file: the header and the sections it owns (shared/programmes.py SECTIONS).
MODELS: dict[str, type[ProgrammeVersion]] = {"earn": EarnProgramme, "tiers": TiersProgramme,
                                              "referral": ReferralProgramme, "redemption": RedemptionProgramme}


def add_parser(sub: argparse._SubParsersAction) -> None:
    programme = sub.add_parser("programme", help="programme tools").add_subparsers(dest="programme_command",
                                                                                    required=True)
    check = programme.add_parser("check", help="validate programme files or folders as every service loads them, "
                                               "and the files given together as one folder; exits 1 naming file, "
                                               "line and field")
    check.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="a programme file, or a folder of them")
    check.add_argument("--in-force", metavar="FOLDER|REV",
                       help="the versions the services run now: a folder of them, or a git revision of the files "
                            "given (default: git HEAD when the files are in a git work tree); a version in effect "
                            "that was changed, or a new one taking effect in the past, is refused as the services "
                            "refuse it")
    summary = programme.add_parser("summary", help="a programme's points: issued, redeemed, expired, adjusted, "
                                                   "outstanding, pending, liability, expiring by month (the ledger's "
                                                   "GET /v1/programs/{p}/summary)")
    summary.add_argument("program", help="the programme id")
    points.add_connection(summary)
    summary.add_argument("--tiers-url", default=os.environ.get("JIFEN_TIERS_URL", TIERS_URL),
                         help=f"the tiers service, for members by tier (default JIFEN_TIERS_URL or {TIERS_URL})")


def check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.paths:
        problems = _problems(functools.partial(_load, path))
        for problem in problems:
            print(f"✘ {problem}", file=sys.stderr)
        failed += bool(problems)
        if not problems:
            print(f"✔ {path}: {_described(path)}")
    files = [f for path in args.paths for f in (sorted(path.glob("*.y*ml")) if path.is_dir() else [path])]
    if not failed and len(files) > 1:
        # The services load one folder: files that are each valid may still clash there (the same version twice,
        # a later version taking effect earlier).
        clashes = _problems(functools.partial(load_files, files))
        for problem in clashes:
            print(f"✘ together, as one folder: {problem}", file=sys.stderr)
        failed += bool(clashes)
    if not failed:
        failed += _judged_against_the_versions_in_force(files, args.in_force)
    return 1 if failed else 0


def _judged_against_the_versions_in_force(files: list[Path], in_force: str | None) -> int:
    """The services refuse a whole folder when one version in effect changed (in any section: they compare every
    section, not only their own) or a new one starts in the past. Say so now, as they will."""
    try:
        before, against = _in_force(files, in_force)
    except (ProgrammeError, OSError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    problems = history_rewrites(before, fingerprints(files), datetime.now(UTC)) if before is not None else []
    if before is None:
        print("  (not compared with the versions in force: not in a git work tree; --in-force FOLDER|REV does)")
        return 0
    for problem in problems:
        print(f"✘ against the versions in force ({against}), every service would refuse the folder: {problem}",
              file=sys.stderr)
    if not problems:
        print(f"✔ against the versions in force ({against}): every service takes these files")
    return 1 if problems else 0


def _in_force(files: list[Path], in_force: str | None) -> tuple[dict[tuple[str, int], Fingerprint] | None, str]:
    """The fingerprints of the versions in force: a folder's files, or the files given as of a git revision."""
    if in_force is not None and Path(in_force).is_dir():
        return fingerprints(sorted(Path(in_force).glob("*.y*ml"))), in_force
    revision = in_force or "HEAD"
    found: dict[tuple[str, int], Fingerprint] = {}
    for path in files:
        shown = subprocess.run(["git", "-C", str(path.resolve().parent), "show", f"{revision}:./{path.name}"],
                               capture_output=True, text=True, check=False)
        if shown.returncode != 0:
            if "exists on disk, but not in" in shown.stderr or "does not exist in" in shown.stderr:
                continue  # a file new since the revision: a new version, judged by its effective_from
            if in_force is None:
                return None, revision  # not in a git work tree (or one without commits): nothing to compare with
            raise ProgrammeError(f"--in-force {revision}: neither a folder nor a git revision of {path}")
        one = fingerprint(shown.stdout, path.name)
        found[(one.program_id, one.version)] = one
    return found, f"git {revision}"


def _load(path: Path, model: type[ProgrammeVersion]) -> object:
    return load_folder(path, model) if path.is_dir() else load_file(path, model)


def _problems(load: Callable[[type[ProgrammeVersion]], object]) -> list[str]:
    found = []
    for model in MODELS.values():
        try:
            load(model)
        except (ProgrammeError, OSError) as exc:
            if str(exc) not in found:
                found.append(str(exc))
    return found


def _described(path: Path) -> str:
    if path.is_dir():
        versions = load_folder(path, ProgrammeVersion)
        return ", ".join(f"{p} versions {', '.join(str(v.version) for v in vs)}" for p, vs in versions.items())
    header = load_file(path, ProgrammeVersion)
    raw = yaml.safe_load(path.read_text())
    unread = sorted(key for key in raw if SECTIONS.get(key, "earn") not in MODELS)
    note = f" (not checked: {', '.join(unread)}, which no service of this build reads)" if unread else ""
    return (f"programme {header.program_id} version {header.version}, in effect from "
            f"{shown(header.effective_from, header.zone)}{note}")
