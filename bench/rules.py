"""`jifen bench --mode rules`: what the earn rules cost end to end. The same kind of feed goes through the
stack's earn three times, restarted each time with another programme folder: the base rule alone, the shipped
default programme, and a programme that fires every kind of purchase rule (several credits per purchase, with a
cap and a budget that never bind but are checked for every credit). The stack's earn is restarted with its own
programmes at the end."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.baselines import machine, ratio, verdict
from bench.pipeline import Throughput, settle, throughput
from deploy.local.stack import Stack
from services.earn.domain import fired_rules
from services.earn.programme import Programme
from shared import db
from shared.contracts.purchases import PurchaseCompleted
from shared.envelope import parse
from shared.programmes import load_file
from shared.settings import Settings
from shared.simulation import Feed

TARGET_SHARE = 0.80  # the full default programme keeps at least 80% of the base rule's throughput
BASE_ONLY: dict[str, Any] = {
    "program_id": "default", "name": "Bench: the base rule alone", "version": 1,
    "effective_from": "2020-01-01T00:00:00Z", "purchase": {"base": {"rule_id": "base", "points_per_unit": "1"}},
}
EVERY_RULE: dict[str, Any] = {
    "program_id": "default", "name": "Bench: every purchase rule", "version": 1,
    "effective_from": "2020-01-01T00:00:00Z", "timezone": "Asia/Shanghai",
    "purchase": {
        "base": {"rule_id": "base", "points_per_unit": "1"},
        "exclude": {"categories": ["gift_card", "tax", "shipping"]},
        "tier": {"rule_id": "tier"},
        "multipliers": [{"rule_id": "dairy-x2", "categories": ["dairy"], "multiplier": "2"},
                        {"rule_id": "tea-x3", "skus": ["SKU-TEA-250"], "multiplier": "3"}],
        "bonuses": [{"rule_id": "eggs-bonus", "skus": ["SKU-EGGS-12"], "points": 5, "per": "unit"}],
        "campaigns": [{"rule_id": "grocery-x1.5", "multiplier": "1.5", "starts": "2020-01-01T00:00:00Z",
                       "ends": "2100-01-01T00:00:00Z", "categories": ["grocery", "beverages"]}],
        "rebates": [{"rule_id": "rebate", "min_total": "100", "percent": "2",
                     "higher": [{"categories": ["beverages"], "percent": "5"}]}],
    },
    "pending": {"by_channel": {"online": 14}},
    "expiry": {"policy": "rolling", "months": 24},
    "caps": [{"rule_id": "eggs-bonus", "per": "day", "points": 10**9}],
    "budget": {"per": "day", "points": 10**15},
}


def entries_under(programme: Programme) -> Callable[[Feed], int]:
    """How many ledger entries a feed causes under a programme: one per rule that fires, per purchase."""
    def count(feed: Feed) -> int:
        total = 0
        for message in feed.messages:
            event = parse(message.value, message.headers)
            total += len(fired_rules(programme, event.time, PurchaseCompleted.model_validate(event.data)))
        return total
    return count


async def run_rules_bench(args: argparse.Namespace) -> int:
    settings, stack = Settings(), Stack()
    print(f"\nJifen bench, rules: {args.count:,} purchases end to end under three programmes (earn is restarted "
          f"with each)\n  start: {machine()}", flush=True)
    runs: dict[str, Throughput | None] = {}
    conn = await db.connect(settings.asyncpg_dsn)
    try:
        with tempfile.TemporaryDirectory(prefix="jifen-bench-rules-") as tmp:
            for label, folder in (("base rule alone", _folder(Path(tmp), "base", BASE_ONLY)),
                                  ("shipped default programme", Settings().programmes_dir),
                                  ("every purchase rule", _folder(Path(tmp), "every", EVERY_RULE))):
                programme = load_file(folder / "default.yaml", Programme)
                print(f"\n  {label}: {folder / 'default.yaml'}", flush=True)
                stack.restart_service("earn", JIFEN_PROGRAMMES_DIR=str(folder))
                await settle(conn)
                runs[label] = await throughput(settings, conn, args.count, entries_under(programme))
    finally:
        await conn.close()
        print("\n  restarting earn with its own programmes", flush=True)
        stack.restart_service("earn")

    base = runs["base rule alone"]
    print("\nResults (end to end, from the first send to the last ledger entry)")
    print(f"  {'programme':<30}{'purchases/s':>14}{'entries/s':>12}{'entries':>11}  vs base rule alone")
    for label, run in runs.items():
        if run is None:
            print(f"  {label:<30}{'timed out':>14}")
            continue
        share = ratio(run.per_s, base.per_s) if base else "n/a"
        print(f"  {label:<30}{run.per_s:>14,.0f}{run.entries_per_s:>12,.0f}{run.entries:>11,}  {share}")
    default = runs["shipped default programme"]
    ok = base is not None and default is not None and default.per_s >= TARGET_SHARE * base.per_s
    print("\nTargets")
    print(f"  {verdict(ok)}  the shipped default programme keeps ≥ {TARGET_SHARE:.0%} of the base rule's "
          f"purchases/s ({ratio(default.per_s, base.per_s) if base and default else 'n/a'})")
    print(f"\n  end: {machine()}\n")
    return 0 if all(runs.values()) else 1


def _folder(root: Path, name: str, programme: dict[str, Any]) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "default.yaml").write_text(yaml.safe_dump(programme))
    return folder
