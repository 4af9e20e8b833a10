"""`jifen programme check PATH...`: validate programme files (or folders) as every service would load them."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from cli import points
from services.earn.domain import Programme as EarnProgramme
from services.redemption.programme import RedemptionProgramme
from services.referral.domain import ReferralProgramme
from services.tiers.domain import TiersProgramme
from shared.programmes import SECTIONS, ProgrammeError, ProgrammeVersion, load_file, load_files, load_folder

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
    return 1 if failed else 0


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
            f"{header.effective_from.isoformat()}{note}")
