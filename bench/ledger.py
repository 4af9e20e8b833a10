"""`jifen bench --mode ledger`: the ledger alone, applying a backlog of commands, set against the raw
PostgreSQL insert baseline measured on the same machine in the same run.

The bench starts a ledger process of its own (its own topic prefix, consumer group, schema and HTTP port)
only once its commands are on the topic, so what is timed is the ledger applying them, not us producing them:
  (a) credits only, spread over many members;
  (b) a mix: 70% credits, 10% holds placed and 10% captured, 5% debits and 5% reversals of (a)'s credits,
      planned against each member's expected balance so that every one of them should be posted.
`--ledgers N` runs N such processes in one consumer group, sharing the partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.baselines import INSERT_BATCH, BenchError, machine, postgres_baseline, ratio, verdict
from bench.probes import PrivateLedger, Profiler, Snapshot, cores_busy, cpu_snapshot, hot_spots, parent_of
from bench.workload import (
    KIND_OF_TYPE,
    KINDS,
    PROGRAM,
    Command,
    CommandMaker,
    Wallet,
    check_contracts,
    plan_credits,
    plan_mix,
)
from deploy.local.infra import REPO, Kafka, create_topics, kafka_ready, pid_alive
from shared import db, envelope, keys
from shared.contracts import topics
from shared.settings import Settings

LEDGER_MIGRATIONS = REPO / "services" / "ledger" / "migrations"

TARGET_CREDITS_PER_S = 10_000.0
TARGET_MIXED_PER_S = 5_000.0

WATCH_S = 0.05  # the completion probe is a few primary-key look-ups: cheap enough to run this often
PROGRESS_S = 5.0
STALL_S = 60.0  # no command stored for this long (or none at all this long after start) fails the phase
DRAIN_TIMEOUT_S = 180.0


# --- a phase ---------------------------------------------------------------------------------------------

@dataclass
class Preloaded:
    first_keys: list[str]  # the first command on each partition
    last_keys: list[str]  # the last: once each is stored, so is everything before it
    seconds: float


@dataclass
class Phase:
    title: str  # (a) credits, (b) mixed
    sent: Counter[str]  # commands by kind
    wall_s: float  # first commit seen → every command stored
    wall_commands: int  # the commands stored in that window
    span_s: float  # first batch's received_at → last batch's
    span_commands: int  # the commands of every batch but the last
    batches: int
    drain_s: float | None  # last command stored → outbox empty (outcomes published)
    cpu: dict[str, float]  # cores busy over the wall window
    outcomes: Counter[tuple[str, str, str]]  # (kind, posted|rejected, reason) → commands
    entries: int
    dlq: int
    profile: list[str]

    @property
    def per_s(self) -> float:
        return self.wall_commands / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def span_per_s(self) -> float | None:
        return self.span_commands / self.span_s if self.span_s > 0 else None

    @property
    def rejected(self) -> int:
        return sum(n for (_, outcome, _), n in self.outcomes.items() if outcome != "posted")


@dataclass
class Bench:
    settings: Settings
    run_id: str
    prefix: str
    schema: str
    timeout_s: float
    ledgers: list[PrivateLedger]  # one consumer group: they share the partitions
    profiler: Profiler | None
    conn: asyncpg.Connection
    postmaster: int | None = None  # the PostgreSQL server's, when it runs on this machine
    kafka_pid: int | None = None  # the stack's broker, when the stack started it

    @property
    def commands_topic(self) -> str:
        return topics.named(topics.LEDGER_COMMANDS, self.prefix)

    async def preload(self, commands: list[Command]) -> Preloaded:
        producer = AIOKafkaProducer(**self.settings.kafka.options(), enable_idempotence=True,
                                    acks="all", linger_ms=5, max_batch_size=512 * 1024)
        await producer.start()
        started = last_print = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                futures = []
                for i, command in enumerate(commands):
                    futures.append(await producer.send(self.commands_topic, command.value,
                                                       key=command.member.encode(),
                                                       headers=envelope.STRUCTURED_HEADERS))
                    if i % 1000 == 0 and time.monotonic() - last_print >= PROGRESS_S:
                        last_print = time.monotonic()
                        print(f"    sent {i:,}/{len(commands):,}", flush=True)
                sent = await asyncio.gather(*futures)
        except TimeoutError as exc:
            raise BenchError(f"preloading {len(commands):,} commands took over {self.timeout_s:.0f}s; "
                             f"is Kafka at {self.settings.kafka_bootstrap} healthy?") from exc
        finally:
            await producer.stop()
        first: dict[int, str] = {}
        last: dict[int, str] = {}
        for command, meta in zip(commands, sent, strict=True):
            first.setdefault(meta.partition, command.key)
            last[meta.partition] = command.key  # one idempotent producer: a partition keeps the send order
        return Preloaded(list(first.values()), list(last.values()), time.monotonic() - started)

    async def stored(self) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM commands"))

    async def dlq_size(self) -> int:
        topic = topics.dlq(self.commands_topic)
        consumer = AIOKafkaConsumer(topic, **self.settings.kafka.options(), group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(parts)
            starts = await consumer.beginning_offsets(parts)
            return sum(ends[p] - starts[p] for p in parts)
        finally:
            await consumer.stop()

    async def run(self, name: str, title: str, commands: list[Command], like: str) -> Phase:
        """Preload `commands` with the ledger stopped, start it, and time it until every one is stored."""
        before, dlq_before = await self.stored(), await self.dlq_size()
        preloaded = await self.preload(commands)
        print(f"  preloaded {len(commands):,} commands in {preloaded.seconds:.1f}s; starting the ledger", flush=True)
        await asyncio.gather(*(ledger.start() for ledger in self.ledgers))
        pids = ", ".join(str(ledger.pid) for ledger in self.ledgers)
        print(f"  ledger ready (pid {pids}); timing it until every command is stored", flush=True)
        try:
            if self.profiler is not None:
                await self.profiler.start(self.ledgers[0].pid, name)
            wall_s, wall_commands, cpu = await self.watch(preloaded, len(commands), before, dlq_before)
            profile = await self.profiler.stop() if self.profiler is not None else None
            drain_s = await self.drain()
        finally:
            if self.profiler is not None:
                await self.profiler.stop()
            await self.stop_ledgers()
        span = await self.conn.fetchrow(
            """WITH run AS (SELECT received_at FROM commands WHERE idempotency_key LIKE $1)
               SELECT count(*) AS n, min(received_at) AS first, max(received_at) AS last,
                      count(DISTINCT received_at) AS batches,
                      count(*) FILTER (WHERE received_at = (SELECT max(received_at) FROM run)) AS last_batch
               FROM run""", like)
        outcomes: Counter[tuple[str, str, str]] = Counter()
        for r in await self.conn.fetch(
                """SELECT command_type, outcome, coalesce(reason, '') AS reason, count(*) AS n FROM commands
                   WHERE idempotency_key LIKE $1 GROUP BY 1, 2, 3""", like):
            outcomes[(KIND_OF_TYPE.get(r["command_type"], r["command_type"]), r["outcome"], r["reason"])] = r["n"]
        entries = await self.conn.fetchval("SELECT count(*) FROM entries WHERE command_key LIKE $1", like)
        return Phase(
            title=title, sent=Counter(c.kind for c in commands), wall_s=wall_s, wall_commands=wall_commands,
            span_s=(span["last"] - span["first"]).total_seconds() if span["n"] else 0.0,
            span_commands=span["n"] - span["last_batch"],
            batches=span["batches"], drain_s=drain_s, cpu=cpu, outcomes=outcomes, entries=entries,
            dlq=await self.dlq_size() - dlq_before,
            profile=await asyncio.to_thread(hot_spots, *profile) if profile is not None else [])

    async def watch(self, preloaded: Preloaded, expected: int, before: int,
                    dlq_before: int) -> tuple[float, int, dict[str, float]]:
        """Wait for every command to be stored. Returns the seconds from the first commit seen to the last,
        the commands stored in between, and the cores each part kept busy meanwhile."""
        started = last_print = last_change = time.monotonic()
        first_seen: float | None = None
        at_first, last_count = 0, 0
        cpu_first: Snapshot = {}
        while True:
            now = time.monotonic()
            if first_seen is None and await self.any_stored(preloaded.first_keys):
                at_first = await self.stored() - before
                first_seen = last_change = time.monotonic()
                cpu_first = await self.cpu()
            done = first_seen is not None and await self.any_stored(preloaded.last_keys) == len(preloaded.last_keys)
            if not done and now - last_print >= PROGRESS_S:
                count = await self.stored() - before
                if count != last_count:
                    last_change = now
                elif count + await self.dlq_size() - dlq_before >= expected:
                    if first_seen is None:
                        raise BenchError(f"every command went to {topics.dlq(self.commands_topic)}: its headers "
                                         f"say why; see also {self.logs}")
                    done = True  # the rest went to the DLQ: reported with the results
                if not done:
                    recent = (count - last_count) / (now - last_print)
                    since = now - (first_seen or now)
                    overall = (count - at_first) / since if since > 0 else 0.0
                    print(f"    {now - started:6.1f}s  {count:>9,}/{expected:,} stored  {overall:8,.0f}/s overall  "
                          f"{recent:8,.0f}/s last {now - last_print:.0f}s  load {os.getloadavg()[0]:.2f}", flush=True)
                last_print, last_count = now, count
            if done and first_seen is not None:
                window = time.monotonic() - first_seen
                cores = cores_busy(cpu_first, await self.cpu(), window)
                return window, await self.stored() - before - at_first, cores
            self.check_alive("while applying commands")
            if now - last_change > STALL_S:
                raise BenchError(f"no command stored for {STALL_S:.0f}s ({last_count:,} of {expected:,} stored; "
                                 f"{await self.dlq_size() - dlq_before:,} on {topics.dlq(self.commands_topic)}); "
                                 f"see {self.logs}")
            if now - started > self.timeout_s:
                raise BenchError(f"timed out after {self.timeout_s:.0f}s (--timeout) with {last_count:,} of "
                                 f"{expected:,} commands stored; see {self.logs}")
            await asyncio.sleep(WATCH_S)

    async def cpu(self) -> Snapshot:
        roots: list[tuple[str, int | None]] = [("ledger", ledger.pid) for ledger in self.ledgers]
        roots += [("postgres", self.postmaster), ("kafka", self.kafka_pid), ("bench", os.getpid())]
        return await asyncio.to_thread(cpu_snapshot, roots)

    def check_alive(self, when: str) -> None:
        for ledger in self.ledgers:
            ledger.check_alive(when)

    async def stop_ledgers(self) -> None:
        await asyncio.gather(*(ledger.stop() for ledger in self.ledgers))

    @property
    def logs(self) -> str:
        return ", ".join(str(ledger.log_file) for ledger in self.ledgers)

    async def any_stored(self, keys: list[str]) -> int:
        """How many of these commands are stored: primary-key look-ups, cheap enough to ask every WATCH_S."""
        return int(await self.conn.fetchval(
            "SELECT count(*) FROM commands WHERE idempotency_key = ANY($1::text[])", keys))

    async def drain(self) -> float | None:
        """Seconds until the outbox is empty: every outcome published on the entries topic."""
        started = time.monotonic()
        while await self.conn.fetchval("SELECT count(*) FROM outbox"):
            if time.monotonic() - started > DRAIN_TIMEOUT_S:
                print(f"    (outbox still not empty {DRAIN_TIMEOUT_S:.0f}s after the last command; carrying on)")
                return None
            self.check_alive("while publishing outcomes")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def balances(self, wallets: dict[str, Wallet]) -> list[str]:
        """Members whose stored balance is not the expected one, described."""
        stored = {r["member_id"]: r["balance"] for r in await self.conn.fetch(
            "SELECT member_id, balance FROM accounts WHERE kind = 'member' AND program_id = $1", PROGRAM)}
        return [f"{member}: expected {wallet.balance}, stored {stored.get(member)}"
                for member, wallet in sorted(wallets.items())
                if stored.get(member, 0) != wallet.balance]

    async def credits_posted(self, wallets: dict[str, Wallet], like: str) -> None:
        """Give each wallet the entry ids of its credits, for the mixed phase to reverse."""
        for r in await self.conn.fetch(
                """SELECT a.member_id, e.id, e.amount FROM entries e JOIN accounts a ON a.id = e.account_id
                   WHERE e.kind = 'earn' AND e.command_key LIKE $1 ORDER BY e.id""", like):
            wallets[r["member_id"]].credits.append((r["id"], r["amount"]))


# --- the run ---------------------------------------------------------------------------------------------

def report_phase(phase: Phase) -> None:
    span = f"{phase.span_per_s:,.0f}/s" if phase.span_per_s else "n/a (one batch)"
    drained = f"{phase.drain_s:.1f}s" if phase.drain_s is not None else "not within the time limit"
    print(f"  stored {phase.wall_commands:,} commands in {phase.wall_s:.1f}s after the first commit: "
          f"{phase.per_s:,.0f}/s ({span} from the batches' own stamps, {phase.batches:,} batches); "
          f"outcomes published {drained} later")
    print("  cores busy meanwhile: " + ", ".join(f"{part} {cores:.2f}" for part, cores in phase.cpu.items())
          + f" (of {os.cpu_count()})")
    kinds = sorted(phase.sent, key=list(KINDS).index)
    for kind in kinds:
        rows = {(outcome, reason): n for (k, outcome, reason), n in phase.outcomes.items() if k == kind}
        posted = rows.pop(("posted", ""), 0)
        refused = "".join(f", {n:,} {outcome} ({reason})" for (outcome, reason), n in sorted(rows.items()))
        print(f"    {kind:<8} sent {phase.sent[kind]:>8,}  posted {posted:>8,}{refused}")
    print(f"    entries posted {phase.entries:,}; sent to the DLQ {phase.dlq:,}")
    for row in phase.profile:
        print(row)


async def run_ledger_bench(args: argparse.Namespace) -> int:
    small = [name for name in ("credits", "mixed", "members", "ledgers", "partitions") if getattr(args, name) < 1]
    if small:
        print(f"✘ --{', --'.join(small)} must be at least 1", file=sys.stderr)
        return 2
    settings = Settings()
    run_id = uuid.uuid4().hex[:8]
    prefix, schema = f"bench.{run_id}.", f"bench_ledger_{run_id}"
    run_dir = Path(os.environ.get("JIFEN_RUN_DIR", REPO / ".run"))
    print(f"\nJifen ledger bench {run_id}: (a) {args.credits:,} credits, (b) {args.mixed:,} mixed commands, "
          f"{args.members:,} members, {args.partitions} partitions")
    logs = [run_dir / "logs" / f"bench-ledger{f'-{n + 1}' if n else ''}.log" for n in range(args.ledgers)]
    print(f"  {'a ledger' if args.ledgers == 1 else f'{args.ledgers} ledger processes'} of its own: topics {prefix}*, "
          f"schema {schema}, log {', '.join(str(log) for log in logs)}")
    print(f"  start: {machine()}", flush=True)
    try:
        profiler = Profiler(Path(args.profile), run_id) if args.profile else None
        conn = await _connect(settings, schema)
    except BenchError as exc:
        print(f"\n✘ {exc}", file=sys.stderr)
        return 1
    bench = Bench(settings, run_id, prefix, schema, args.timeout,
                  [PrivateLedger(settings, prefix, schema, log) for log in logs], profiler, conn)
    try:
        await create_topics(settings.kafka, _topics(prefix), args.partitions)
        await db.migrate(settings.asyncpg_dsn, schema, LEDGER_MIGRATIONS)
        bench.postmaster = parent_of(await conn.fetchval("SELECT pg_backend_pid()"))
        bench.kafka_pid = pid_alive(Kafka(run_dir).pid_file)
        return await _measure(bench, args)
    except BenchError as exc:
        print(f"\n✘ {exc}\n  end: {machine()}", file=sys.stderr)
        return 1
    finally:
        await bench.stop_ledgers()
        if args.keep:
            print(f"  kept schema {schema} and topics {prefix}* (--keep)")
        else:
            await _clean_up(settings, conn, schema, prefix)
        await conn.close()


async def _measure(bench: Bench, args: argparse.Namespace) -> int:
    print(f"\n1. Raw PostgreSQL: {INSERT_BATCH:,}-row inserts into a copy of the ledger's entries table "
          "(no FKs, no triggers)", flush=True)
    insert_rate = await postgres_baseline(bench.settings.asyncpg_dsn, args.credits, f"{bench.schema}.entries")
    print(f"  inserted {insert_rate:,.0f} rows/s")

    rng = random.Random(args.seed)
    maker = CommandMaker(bench.run_id, datetime.now(UTC) - timedelta(seconds=1))
    wallets = {f"bm-{i:06d}": Wallet() for i in range(args.members)}
    print(f"\n2. (a) Credits only: {args.credits:,} preloaded, then the ledger started", flush=True)
    credits = plan_credits(maker, args.credits, wallets, rng)
    check_contracts(credits)
    a = await bench.run("credits", "(a) credits", credits, keys.bench_commands(bench.run_id, "credit"))
    report_phase(a)
    wrong_a = await bench.balances(wallets)
    await bench.credits_posted(wallets, keys.bench_commands(bench.run_id, "credit"))

    print(f"\n3. (b) Mixed: {args.mixed:,} commands (70% credits, 10% holds placed + 10% captured, 5% debits, "
          "5% reversals of (a)'s credits), preloaded, then the ledger started", flush=True)
    mixed = plan_mix(maker, args.mixed, wallets, rng)
    check_contracts(mixed)
    b = await bench.run("mixed", "(b) mixed", mixed, keys.bench_commands(bench.run_id, "mix"))
    report_phase(b)
    wrong_b = await bench.balances(wallets)

    print("\nResults: the ledger alone; commands/s = commands stored / seconds from the first commit seen to "
          "the last")
    print(f"  {'':<44}{'rate':>22}  {'of raw insert':>13}  {'target':>10}")
    print(f"  {f'raw PostgreSQL insert ({INSERT_BATCH:,}-row statements)':<44}{f'{insert_rate:,.0f} rows/s':>22}")
    for phase, target in ((a, TARGET_CREDITS_PER_S), (b, TARGET_MIXED_PER_S)):
        what = f"{phase.title}: {phase.wall_commands:,} in {phase.wall_s:.1f}s"
        if phase.wall_commands == 0:
            # Timing starts at the first commit, so a phase that fits in one batch per process has nothing to time.
            print(f"  {what:<44}{'not timed':>22}  the phase fit in the first batches; use more commands "
                  "(--credits, --mixed)")
            continue
        print(f"  {what:<44}{f'{phase.per_s:,.0f} commands/s':>22}  {ratio(phase.per_s, insert_rate):>13}  "
              f"{f'{target:,.0f}/s':>10}  {verdict(phase.per_s >= target)}")
    if b.wall_commands:
        args.ledger_mixed_rate = b.per_s  # for the redemption bench of the same run, to set beside
    print("\nChecks")
    ok = True
    for phase, wrong in ((a, wrong_a), (b, wrong_b)):
        ok &= not wrong and phase.dlq == 0
        print(f"  {'✔' if not wrong else '✘'} {phase.title} balances as planned: "
              f"{args.members - len(wrong):,} of {args.members:,} members"
              + "".join(f"\n      {w}" for w in wrong[:5]))
        print(f"  {'✔' if not phase.rejected else '✘'} {phase.title} commands rejected: {phase.rejected:,}; "
              f"sent to the DLQ: {phase.dlq:,}")
    print(f"\n  end: {machine()}\n")
    return 0 if ok else 1


async def _connect(settings: Settings, schema: str) -> asyncpg.Connection:
    """A connection to PostgreSQL with the run's schema on its search path, once Kafka and PostgreSQL answer."""
    if not await kafka_ready(settings.kafka):
        raise BenchError(f"Kafka at {settings.kafka_bootstrap} does not answer: start the stack first "
                         "(jifen stack up; make bench does)")
    try:
        return await db.connect(settings.asyncpg_dsn, schema)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"PostgreSQL (JIFEN_DATABASE_URL) does not answer: {exc!r}; start the stack first "
                         "(jifen stack up; make bench does)") from exc


def _topics(prefix: str) -> list[str]:
    names = [topics.named(topics.LEDGER_COMMANDS, prefix), topics.named(topics.LEDGER_ENTRIES, prefix)]
    return names + [topics.dlq(name) for name in names]


async def _clean_up(settings: Settings, conn: asyncpg.Connection, schema: str, prefix: str) -> None:
    """Drop the run's schema and topics (its consumer group's offsets expire by themselves)."""
    with contextlib.suppress(asyncpg.PostgresError, OSError):
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin = AIOKafkaAdminClient(**settings.kafka.options())
    try:
        await admin.start()
        await admin.delete_topics(_topics(prefix))
    except Exception as exc:  # leftover bench topics are harmless; say so and carry on
        print(f"    (could not delete the topics {prefix}*: {exc!r})")
    finally:
        await admin.close()
