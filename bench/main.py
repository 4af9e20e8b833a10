"""`jifen bench`: each mode's run, one after the other for `--mode all`."""

from __future__ import annotations

import argparse
import os

from shared.settings import Settings

MODES = ["pipeline", "ledger", "history", "rules", "tiers", "referral", "redemption", "insight", "insight-report",
         "whatif", "all"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="throughput (and latency) against raw baselines measured in the same run")
    bench.add_argument("--mode", choices=MODES, default="pipeline",
                       help="pipeline: purchases → earn → ledger (default); ledger: the ledger alone on preloaded "
                            "commands; history: balance and entry pages of a member with a long history; rules: "
                            "the pipeline under the base rule alone, the default programme and every purchase "
                            "rule (restarts the stack's earn); tiers: the tiers service on preloaded ledger entries; "
                            "referral: referral and purchase events through the stack's referral service; "
                            "redemption: concurrent clients redeeming through the stack's redemption service; "
                            "insight: the insight service's consume rate and its cost to the pipeline (see "
                            "bench/insight.py); insight-report: the report's reads on a programme with 1,000,000 "
                            "entries; whatif: the what-if engine on a generated feed in memory (bench/whatif.py); "
                            "all: every mode")
    bench.add_argument("--tier-entries", type=int, default=200_000,
                       help="tiers: earn credits to preload (default %(default)s)")
    bench.add_argument("--tier-members", type=int, default=20_000,
                       help="tiers: members they spread over (default %(default)s)")
    bench.add_argument("--referrals", type=int, default=10_000,
                       help="referral: accepted referrals of the first phase (default %(default)s)")
    bench.add_argument("--referral-purchases", type=int, default=50_000,
                       help="referral: purchases of the second phase (default %(default)s)")
    bench.add_argument("--history-entries", type=int, default=100_000,
                       help="history: entries of the member (default %(default)s)")
    bench.add_argument("--count", type=int, default=200_000,
                       help="pipeline, rules: purchases for each throughput run (default %(default)s)")
    bench.add_argument("--rate", type=float, default=1000.0, help="pipeline: offered rate for the latency run")
    bench.add_argument("--latency-count", type=int, default=30_000, help="pipeline: purchases for the latency run")
    bench.add_argument("--credits", type=int, default=100_000,
                       help="ledger: credits of phase (a) (default %(default)s)")
    bench.add_argument("--mixed", type=int, default=100_000,
                       help="ledger: commands of the mixed phase (b) (default %(default)s)")
    bench.add_argument("--members", type=int, default=20_000,
                       help="ledger: members the commands spread over (default %(default)s)")
    bench.add_argument("--partitions", type=int, default=int(os.environ.get("JIFEN_PARTITIONS", "6")),
                       help="ledger: partitions of the bench's commands topic (default %(default)s, as the stack's)")
    bench.add_argument("--ledgers", type=int, default=os.cpu_count() or 1,
                       help="ledger: ledger processes sharing the partitions, one consumer group (default: one per "
                            "core, %(default)s)")
    bench.add_argument("--seed", type=int, default=7, help="ledger: seed of the planned commands")
    bench.add_argument("--timeout", type=float, default=900.0,
                       help="ledger: seconds a phase may take (default %(default)s)")
    bench.add_argument("--profile", metavar="DIR",
                       help="ledger: record the ledger with py-spy during each phase, write the stacks to DIR and "
                            "print its hot spots (slows the ledger a little)")
    bench.add_argument("--keep", action="store_true", help="ledger, tiers: keep the bench's schema and topics")
    from bench.insight import add_arguments as insight_arguments
    from bench.redemption import add_arguments
    from bench.whatif import add_arguments as whatif_arguments

    add_arguments(bench)
    insight_arguments(bench)
    whatif_arguments(bench)


async def run_bench(args: argparse.Namespace) -> int:
    """The mode asked for (pipeline by default), or every mode one after the other for `all`."""
    codes = []
    if args.mode in ("pipeline", "all"):
        from bench.pipeline import run_pipeline_bench

        codes.append(await run_pipeline_bench(args))
    if args.mode in ("ledger", "all"):
        from bench.ledger import run_ledger_bench

        codes.append(await run_ledger_bench(args))
    if args.mode in ("history", "all"):
        codes.append(await run_history_bench(args))
    if args.mode in ("rules", "all"):
        from bench.rules import run_rules_bench

        codes.append(await run_rules_bench(args))
    if args.mode in ("tiers", "all"):
        from bench.tiers import run_tiers_bench

        codes.append(await run_tiers_bench(args))
    if args.mode in ("referral", "all"):
        from bench.referral import run_referral_bench

        codes.append(await run_referral_bench(args))
    if args.mode in ("redemption", "all"):
        from bench.redemption import run_redemption_bench

        if args.mode == "redemption" and args.ledger_mixed_rate is None:
            # The ledger's mixed rate, measured in this run, is what the redemption rate is set beside.
            from bench.ledger import run_ledger_bench

            print("\nFirst the ledger alone on a short mixed load, to set the redemption rate beside:")
            short = argparse.Namespace(**{**vars(args), "credits": min(args.credits, 20_000),
                                          "mixed": min(args.mixed, 50_000), "keep": False})
            codes.append(await run_ledger_bench(short))
            args.ledger_mixed_rate = short.ledger_mixed_rate
        codes.append(await run_redemption_bench(args))
    if args.mode in ("insight", "insight-report", "all"):
        from bench.insight import run_insight_bench

        codes.append(await run_insight_bench(args))
    if args.mode in ("whatif", "all"):
        from bench.whatif import run_whatif_bench

        codes.append(await run_whatif_bench(args))
    return max(codes)


async def run_history_bench(args: argparse.Namespace) -> int:
    from bench.history import run_history

    print(f"\nJifen bench, history: one member with {args.history_entries:,} entries, seeded through the ledger's "
          f"handler; {os.getloadavg()[0]:.2f} load average")
    timings = await run_history(Settings(), args.history_entries, lambda line: print(f"  · {line}", flush=True),
                                keep=args.keep)
    print(f"\n  {'read':<40} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for t in timings:
        print(f"  {t.what:<40} {t.p50_ms:>8.2f} {t.p99_ms:>8.2f} {t.max_ms:>8.2f}")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


