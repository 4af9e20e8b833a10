"""`jifen programme check PATH...`: validate programme files (or folders) as every service would load them, and
judge them against the versions in force as every service judges a reload. `jifen programme show P`: a version as
every service reads it (merged over the version it is `based_on`), what changed from the one before it, and its
experiments."""

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
from shared import deltas
from shared.experiments import Experiment
from shared.programmes import (
    BASED_ON,
    SECTIONS,
    Catalogue,
    Fingerprint,
    ProgrammeError,
    ProgrammeVersion,
    fingerprints,
    fingerprints_of,
    history_rewrites,
    load_file,
    load_files,
    load_folder,
    raw_file,
)
from shared.settings import Settings

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
    check.add_argument("--folder", type=Path, metavar="DIR",
                       help="where a file based_on another version finds it (default: the programmes folder, "
                            "JIFEN_PROGRAMMES_DIR or programmes/)")
    check.add_argument("--in-force", metavar="FOLDER|REV",
                       help="the versions the services run now: a folder of them, or a git revision of the files "
                            "given (default: git HEAD when the files are in a git work tree); a version in effect "
                            "that was changed, or a new one taking effect in the past, is refused as the services "
                            "refuse it")
    show = programme.add_parser("show", help="a programme version as every service reads it (merged over the "
                                             "version it is based_on), as YAML; --diff: what changed from the "
                                             "version before it, and its experiments")
    show.add_argument("program", help="the programme id")
    show.add_argument("--version", type=int, metavar="N", help="the version (default: the one in force now)")
    show.add_argument("--diff", action="store_true",
                      help="what changed from the version before (+ added, - removed, ~ changed), and the "
                           "experiments with their dates, arms, shares and overrides")
    show.add_argument("--folder", type=Path, metavar="DIR",
                      help="the programme files (default: JIFEN_PROGRAMMES_DIR or programmes/)")
    summary = programme.add_parser("summary", help="a programme's points: issued, redeemed, expired, adjusted, "
                                                   "outstanding, pending, liability, expiring by month (the ledger's "
                                                   "GET /v1/programs/{p}/summary)")
    summary.add_argument("program", help="the programme id")
    points.add_connection(summary)
    summary.add_argument("--tiers-url", default=os.environ.get("JIFEN_TIERS_URL", TIERS_URL),
                         help=f"the tiers service, for members by tier (default JIFEN_TIERS_URL or {TIERS_URL})")


def _folder(args: argparse.Namespace) -> Path:
    return Path(args.folder) if args.folder is not None else Settings().programmes_dir


def check(args: argparse.Namespace) -> int:
    failed = 0
    bases = sorted(_folder(args).glob("*.y*ml"))
    for path in args.paths:
        problems = _problems(functools.partial(_load, path, bases=bases))
        for problem in problems:
            print(f"✘ {problem}", file=sys.stderr)
        failed += bool(problems)
        if not problems:
            print(f"✔ {path}: {_described(path, bases)}")
    files = [f for path in args.paths for f in (sorted(path.glob("*.y*ml")) if path.is_dir() else [path])]
    if not failed and len(files) > 1:
        # The services load one folder: files that are each valid may still clash there (the same version twice,
        # a later version taking effect earlier).
        clashes = _problems(functools.partial(load_files, files, bases=bases))
        for problem in clashes:
            print(f"✘ together, as one folder: {problem}", file=sys.stderr)
        failed += bool(clashes)
    if not failed:
        failed += _judged_against_the_versions_in_force(files, args.in_force, bases)
    return 1 if failed else 0


def _judged_against_the_versions_in_force(files: list[Path], in_force: str | None, bases: list[Path]) -> int:
    """The services refuse a whole folder when one version in effect changed (in any section: they compare every
    section, not only their own) or a new one starts in the past. Say so now, as they will."""
    try:
        before, against = _in_force(files, in_force, bases)
        problems = history_rewrites(before, fingerprints(files, bases), datetime.now(UTC)) if before else []
    except (ProgrammeError, OSError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    if before is None:
        print("  (not compared with the versions in force: not in a git work tree; --in-force FOLDER|REV does)")
        return 0
    for problem in problems:
        print(f"✘ against the versions in force ({against}), every service would refuse the folder: {problem}",
              file=sys.stderr)
    if not problems:
        print(f"✔ against the versions in force ({against}): every service takes these files")
    return 1 if problems else 0


def _in_force(files: list[Path], in_force: str | None, bases: list[Path]
              ) -> tuple[dict[tuple[str, int], Fingerprint] | None, str]:
    """The fingerprints of the versions in force: a folder's files, or the files given as of a git revision (a
    file based_on another finds it among the folder's files as of that revision too)."""
    if in_force is not None and Path(in_force).is_dir():
        return fingerprints(sorted(Path(in_force).glob("*.y*ml"))), in_force
    revision = in_force or "HEAD"
    texts: list[tuple[str, str]] = []
    for path in files:
        text = _at_revision(path, revision)
        if text is None:
            if in_force is None:
                return None, revision  # not in a git work tree (or one without commits): nothing to compare with
            raise ProgrammeError(f"--in-force {revision}: neither a folder nor a git revision of {path}")
        if text:
            texts.append((path.name, text))  # none: a file new since the revision, judged by its effective_from
    lent = []
    if any(BASED_ON in (yaml.safe_load(text) or {}) for _, text in texts):
        given = {path.resolve() for path in files}
        lent = [(p.name, t) for p in bases if p.resolve() not in given and (t := _at_revision(p, revision))]
    return fingerprints_of(texts, lent), f"git {revision}"


def _at_revision(path: Path, revision: str) -> str | None:
    """The file's text as of a git revision; "" when the revision has no such file, None when it is no revision."""
    shown = subprocess.run(["git", "-C", str(path.resolve().parent), "show", f"{revision}:./{path.name}"],
                           capture_output=True, text=True, check=False)
    if shown.returncode == 0:
        return shown.stdout
    if "exists on disk, but not in" in shown.stderr or "does not exist in" in shown.stderr:
        return ""
    return None


def _load(path: Path, model: type[ProgrammeVersion], bases: list[Path]) -> object:
    return load_folder(path, model) if path.is_dir() else load_file(path, model, [*bases, *_beside(path)])


def _beside(path: Path) -> list[Path]:
    return sorted(path.parent.glob("*.y*ml"))


def _problems(load: Callable[[type[ProgrammeVersion]], object]) -> list[str]:
    found = []
    for model in MODELS.values():
        try:
            load(model)
        except (ProgrammeError, OSError) as exc:
            if str(exc) not in found:
                found.append(str(exc))
    return found


def _described(path: Path, bases: list[Path]) -> str:
    if path.is_dir():
        versions = load_folder(path, ProgrammeVersion)
        return ", ".join(f"{p} versions {', '.join(str(v.version) for v in vs)}" for p, vs in versions.items())
    header = load_file(path, ProgrammeVersion, [*bases, *_beside(path)])
    raw = raw_file(path, [*bases, *_beside(path)])
    unread = sorted(key for key in raw if SECTIONS.get(key, "earn") not in MODELS)
    note = f" (not checked: {', '.join(unread)}, which no service of this build reads)" if unread else ""
    based_on = yaml.safe_load(path.read_text()).get(BASED_ON)
    based = f", based on version {based_on}" if based_on is not None else ""
    return (f"programme {header.program_id} version {header.version}{based}, in effect from "
            f"{shown(header.effective_from, header.zone)}{note}")


def show(args: argparse.Namespace) -> int:
    """Print a version as every service reads it, or (--diff) what changed from the one before and its
    experiments. An unknown programme or version: one line, exit 2."""
    folder = _folder(args)
    try:
        catalogue = Catalogue.load(folder, ProgrammeVersion)
    except (ProgrammeError, OSError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    versions = catalogue.versions.get(args.program)
    now = datetime.now(UTC)
    if not versions:
        print(f"✘ {catalogue.why_not(args.program, now)} in {folder}", file=sys.stderr)
        return 2
    if args.version is None:
        chosen = catalogue.at(args.program, now)
        if chosen is None:
            print(f"✘ programme {args.program!r} has no version in force now (version {versions[0].version} takes "
                  f"effect {versions[0].effective_from.isoformat()}): give --version N", file=sys.stderr)
            return 2
    else:
        chosen = next((v for v in versions if v.version == args.version), None)
        if chosen is None:
            print(f"✘ programme {args.program!r} has no version {args.version} (its versions: "
                  f"{', '.join(str(v.version) for v in versions)})", file=sys.stderr)
            return 2
    raw = catalogue.raws[(args.program, chosen.version)]
    if not args.diff:
        print(f"# programme {args.program} version {chosen.version}, in effect from "
              f"{shown(chosen.effective_from, chosen.zone)}, as every service reads it")
        print(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120), end="")
        return 0
    before = next((v for v in reversed(versions) if v.version < chosen.version), None)
    if before is None:
        print(f"# programme {args.program} version {chosen.version} is its first: nothing before it")
    else:
        print(f"# programme {args.program} version {chosen.version} against version {before.version}")
        for line in changed(catalogue.raws[(args.program, before.version)], raw):
            print(line)
    print()
    for line in experiments_block(raw, chosen.experiments, now):
        print(line)
    return 0


def changed(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """`deltas.changes` as lines: "+ path: value", "- path", "~ path: old → new"."""
    lines = []
    for path, kind, old, new in deltas.changes(before, after):
        if kind == "added":
            lines.append(f"+ {path}: {_flow(new)}")
        elif kind == "removed":
            lines.append(f"- {path}")
        else:
            lines.append(f"~ {path}: {_flow(old)} → {_flow(new)}")
    return lines


def experiments_block(raw: dict[str, object], experiments: list[Experiment], now: datetime) -> list[str]:
    """The version's experiments: dates, whether running now, each arm's share and what its overrides change."""
    if not experiments:
        return ["experiments: none"]
    lines = ["experiments:"]
    for experiment in experiments:
        state = ("running" if experiment.running(now) else "ended" if experiment.ends <= now else "not started")
        named = f" ({experiment.name})" if experiment.name else ""
        lines.append(f"  {experiment.experiment_id}{named}: {experiment.starts.isoformat()} → "
                     f"{experiment.ends.isoformat()} ({state})")
        for arm in experiment.arms:
            lines.append(f"    {arm.name}: share {arm.share}" + ("" if arm.overrides else ", no overrides"))
            lines += [f"      {line}" for line in changed(raw, deltas.merge(raw, arm.overrides))]
    return lines


def _flow(value: object) -> str:
    """A value on one line: YAML's flow style."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10_000).strip()
    return text.removesuffix("\n...").strip()
