"""`jifen programme check PATH...`: validate programme files (or folders) as every service would load them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from cli import points
from services.earn.domain import Programme as EarnProgramme
from services.redemption.programme import RedemptionProgramme
from services.referral.domain import ReferralProgramme
from services.tiers.domain import TiersProgramme
from shared.programmes import SECTIONS, ProgrammeError, ProgrammeVersion, load_file, load_folder

# Each service's view of a programme file: the header and the sections it owns (shared/programmes.py SECTIONS).
MODELS: dict[str, type[ProgrammeVersion]] = {"earn": EarnProgramme, "tiers": TiersProgramme,
                                              "referral": ReferralProgramme, "redemption": RedemptionProgramme}


def add_parser(sub: argparse._SubParsersAction) -> None:
    programme = sub.add_parser("programme", help="programme tools").add_subparsers(dest="programme_command",
                                                                                    required=True)
    check = programme.add_parser("check", help="validate programme files or folders as every service loads them; "
                                               "exits 1 naming file, line and field")
    check.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="a programme file, or a folder of them")
    summary = programme.add_parser("summary", help="a programme's points: issued, redeemed, expired, adjusted, "
                                                   "outstanding, pending, liability, expiring by month (the ledger's "
                                                   "GET /v1/programs/{p}/summary)")
    summary.add_argument("program", help="the programme id")
    points.add_connection(summary)


def check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.paths:
        problems = _problems(path)
        for problem in problems:
            print(f"✘ {problem}", file=sys.stderr)
        failed += bool(problems)
        if not problems:
            print(f"✔ {path}: {_described(path)}")
    return 1 if failed else 0


def _problems(path: Path) -> list[str]:
    found = []
    for model in MODELS.values():
        try:
            if path.is_dir():
                load_folder(path, model)
            else:
                load_file(path, model)
        except ProgrammeError as exc:
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
