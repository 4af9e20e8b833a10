"""`jifen bench --mode whatif`: the what-if engine's time per 1,000,000 events, in memory (no Kafka, no database).

The feed is the forecast's generated one (cli/whatif/forecast.py `synthetic_events`: members who enrol, buy,
get refunds, check in and refer) for the shipped `default` programme, with its tiers and referral sections; the draft
doubles the base rate from the middle of the feed, so the first half is the warm-up and both sides judge the second.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from cli.whatif import engine
from cli.whatif.forecast import synthetic_events
from shared.contracts.topics import contracts
from shared.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--whatif-members", type=int, default=25_000,
                        help="whatif: members of the generated feed (default %(default)s: about 1,000,000 events "
                             "over --whatif-days)")
    parser.add_argument("--whatif-days", type=int, default=90, help="whatif: days of the feed (default %(default)s)")


async def run_whatif_bench(args: argparse.Namespace) -> int:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    print(f"\nJifen bench, whatif: a generated feed of {args.whatif_members:,} members over {args.whatif_days} days "
          f"for the default programme; {os.getloadavg()[0]:.2f} load average", flush=True)
    began = time.monotonic()
    events = synthetic_events("default", args.whatif_members, Decimal(120), 8.0, args.whatif_days, 7, start)
    print(f"  · {len(events):,} events generated in {time.monotonic() - began:.1f} s", flush=True)
    # The raw baseline of the same run: each event only decoded into its contract, the first thing a replay does.
    types = contracts()
    began = time.monotonic()
    for event in events:
        types[event.type].model_validate(event.data)
    decoded = time.monotonic() - began
    print(f"  · raw baseline: {len(events):,} events decoded in {decoded:.1f} s "
          f"({len(events) / decoded:,.0f} events/s)", flush=True)
    period = start + timedelta(days=args.whatif_days // 2)
    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / "double-base.yaml"
        draft.write_text("based_on: 1\npurchase:\n  base:\n    points_per_unit: '2'\n")
        began, cpu = time.monotonic(), time.process_time()

        def progress(replayed: int, seconds: float) -> None:
            print(f"\r  · replayed {replayed:,} events ({replayed / seconds:,.0f}/s)", end="", flush=True)

        found = await engine.run(events, program_id="default", folder=Settings().programmes_dir, draft=draft,
                                 start=period, end=start + timedelta(days=args.whatif_days), source="synthetic",
                                 progress=progress)
        wall, cpu = time.monotonic() - began, time.process_time() - cpu
    per_million = wall / found.events * 1_000_000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n  {found.events:,} events replayed in {wall:.1f} s ({cpu:.1f} s of CPU): {per_million:.0f} s per "
          f"1,000,000 events ({found.events / wall:,.0f} events/s); peak memory {peak:,.0f} MiB")
    print(f"  the replay takes {wall / decoded:.1f}× the raw decode of the same events")
    print(f"  points issued in the period: {found.live.issued:,} in force, {found.draft.issued:,} draft")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} (2 minutes per 1,000,000 events is the aim)")
    return 0
