"""`jifen bench --mode redemption`: redemptions completed end to end (HTTP → hold → capture → completed) by concurrent
clients against a running stack, with the latency of their `?wait` answers, set beside the ledger's command rate.

Against the stack's ledger (8102) and redemption (8103) with the API key in .run/api-key, unless told otherwise.
The bench makes members of its own in a programme that has the reward (`default`'s 100-point coupon by default),
credits each exactly what the programme's limits let it redeem through the ledger's commands topic, then has
`--clients` clients redeem, each request waiting for its outcome (`?wait=10`). Every redemption should complete:
any rejection means the plan and the service disagree, and the bench says so and fails.

Runs alone too: `python -m bench.redemption --redemptions 2000 [--redemption-url URL --ledger-url URL
--api-key-file FILE]`, with JIFEN_KAFKA_BOOTSTRAP, JIFEN_TOPIC_PREFIX and JIFEN_PROGRAMMES_DIR as the stack's.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from bench.baselines import BenchError, machine
from bench.ledger import TARGET_MIXED_PER_S
from deploy.local.infra import REPO
from services.redemption.programme import RedemptionProgramme, Reward
from shared import envelope, keys
from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, PostCredit
from shared.programmes import Catalogue
from shared.settings import Settings

WAIT_S = 10
READY_TIMEOUT_S = 30.0
CREDIT_TIMEOUT_S = 300.0
PROGRESS_S = 5.0
DEFAULT_PER_MEMBER = 20  # when the programme sets no limit at all
TARGET_PER_S = 1_000  # the aim, at 50 clients
TARGET_P99_MS = 250


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The redemption bench's options (bench/main.py adds them to `jifen bench`)."""
    parser.add_argument("--redemptions", type=int, default=5000,
                        help="redemption: redemptions to complete (default %(default)s)")
    parser.add_argument("--clients", type=int, default=50, help="redemption: concurrent clients (default %(default)s)")
    parser.add_argument("--solo-redemptions", type=int, default=100,
                        help="redemption: redemptions by one client first, the latency with nothing queued "
                             "(default %(default)s; 0 skips it)")
    parser.add_argument("--program", default="default", help="redemption: the programme (default %(default)s)")
    parser.add_argument("--reward", default="coupon-5",
                        help="redemption: a reward of the programme without stock (default %(default)s)")
    parser.add_argument("--redemption-url", default="http://127.0.0.1:8103", help="redemption: the service's URL")
    parser.add_argument("--ledger-url", default="http://127.0.0.1:8102", help="redemption: the ledger's URL")
    parser.add_argument("--api-key-file", type=Path, default=REPO / ".run" / "api-key",
                        help="redemption: a file holding an API key with the redeem scope (default .run/api-key)")
    parser.add_argument("--ledger-mixed-rate", type=float, default=None,
                        help="redemption: the ledger's mixed-command rate measured by `jifen bench --mode ledger` "
                             "on this machine, to set beside (default: its target)")


@dataclass
class Plan:
    programme: RedemptionProgramme
    reward: Reward
    price: int
    per_member: int
    members: list[str]

    @property
    def asks(self) -> list[tuple[str, str]]:
        """(member, Idempotency-Key), round-robin over members, so no member's row lock queues a client behind
        another."""
        return [(m, f"{m}:{n}") for n in range(self.per_member) for m in self.members]

    def split(self, first: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        asks = self.asks
        return asks[:first], asks[first:]


@dataclass
class Run:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds per answer, completed ones
    outcomes: Counter[str] = field(default_factory=Counter)  # completed, or the reason it was not
    ledger_commands: float | None = None  # commands the ledger applied during the run


def plan(programme: RedemptionProgramme, reward_id: str, count: int, run_id: str) -> Plan:
    """Members enough that none meets a limit: each redeems what the tightest of the programme's limits allows."""
    reward = programme.reward(reward_id)
    if reward is None:
        raise BenchError(f"programme {programme.program_id!r} has no reward {reward_id!r}")
    if reward.stock is not None or reward.tiers is not None or reward.available is not None:
        raise BenchError(f"{reward_id!r} has stock, tiers or a window: choose a reward anyone can redeem any time")
    limits, price = programme.rules.limits, reward.price(None)
    caps = [DEFAULT_PER_MEMBER]
    if limits.velocity is not None:
        caps.append(limits.velocity.count)
    if limits.per_day is not None:
        caps += [n for n in (limits.per_day.redemptions,) if n is not None]
        if limits.per_day.points is not None:
            caps.append(limits.per_day.points // price)
    if reward.limit is not None:
        caps.append(reward.limit.count)
    per_member = min(caps)
    if per_member < 1:
        raise BenchError(f"the programme's limits let no member redeem {reward_id!r}")
    members = [f"bench-{run_id}-{i:05d}" for i in range(math.ceil(count / per_member))]
    return Plan(programme, reward, price, per_member, members)


async def credit(settings: Settings, ledger: httpx.AsyncClient, p: Plan, run_id: str) -> float:
    """Give every member what it will redeem, through the ledger's commands topic; returns the seconds it took."""
    started = time.monotonic()
    producer = AIOKafkaProducer(**settings.kafka.options(), enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        at = datetime.now(UTC) - timedelta(seconds=5)
        sent = []
        for member in p.members:
            cmd = PostCredit(idempotency_key=keys.bench_command(run_id, "credit", member),
                             program_id=p.programme.program_id,
                             member_id=member, amount=p.price * p.per_member, occurred_at=at,
                             cause=Cause(source_event_id=f"bench|{run_id}|{member}", reason="redemption bench"))
            sent.append(await producer.send(settings.topic(topics.LEDGER_COMMANDS), envelope.encode(
                cmd.idempotency_key, "bench://redemption", cmd.TYPE, at, cmd.model_dump(mode="json")),
                key=member.encode(), headers=envelope.STRUCTURED_HEADERS))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    waiting = set(p.members)
    while waiting:
        if time.monotonic() - started > CREDIT_TIMEOUT_S:
            raise BenchError(f"{len(waiting):,} members not credited after {CREDIT_TIMEOUT_S:.0f}s: is the ledger "
                             "consuming?")
        for member in sorted(waiting)[:200]:
            answer = await ledger.get(f"/v1/programs/{p.programme.program_id}/members/{member}/balance")
            if answer.status_code == 200 and answer.json()["available"] >= p.price * p.per_member:
                waiting.discard(member)
        await asyncio.sleep(0.2 if waiting else 0)
    return time.monotonic() - started


async def redeem(http: httpx.AsyncClient, p: Plan, asks: list[tuple[str, str]], clients: int) -> Run:
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for ask in asks:
        queue.put_nowait(ask)
    run = Run()
    path = f"/v1/programs/{p.programme.program_id}/redemptions?wait={WAIT_S}"

    async def client() -> None:
        while not queue.empty():
            member, key = queue.get_nowait()
            sent = time.perf_counter()
            answer = await http.post(path, headers={"Idempotency-Key": key},
                                     json={"member_id": member, "reward_id": p.reward.reward_id})
            took = time.perf_counter() - sent
            body = answer.json()
            if answer.status_code == 201 and body.get("status") == "completed":
                run.latencies.append(took)
                run.outcomes["completed"] += 1
            elif answer.status_code == 202:
                run.outcomes[f"still pending after {WAIT_S}s"] += 1
            else:
                run.outcomes[f"{answer.status_code} {body.get('error', body.get('status'))}"] += 1

    async def progress(total: int) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(PROGRESS_S)
            done = sum(run.outcomes.values())
            print(f"    {time.monotonic() - started:6.1f}s  {done:>7,}/{total:,} answered  "
                  f"{run.outcomes['completed'] / (time.monotonic() - started):7,.0f} completed/s  "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)

    reporter = asyncio.create_task(progress(queue.qsize()))
    started = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        reporter.cancel()
    run.seconds = time.perf_counter() - started
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else float("nan")


async def ledger_commands_applied(ledger: httpx.AsyncClient) -> float | None:
    """Commands the ledger has applied (its consumer's processed counter, summed), or None when it cannot tell."""
    try:
        text = (await ledger.get("/metrics")).text
    except httpx.HTTPError:
        return None
    found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("jifen_events_processed_total{") and "ledger.commands" in line]
    return sum(found) if found else None


async def ready(http: httpx.AsyncClient, name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if (await http.get("/health/ready")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{name} at {http.base_url} is not ready: start the stack first (jifen stack up)")
        await asyncio.sleep(0.5)


async def run_redemption_bench(args: argparse.Namespace) -> int:
    count, clients = getattr(args, "redemptions", 5000), getattr(args, "clients", 50)
    solo = max(0, getattr(args, "solo_redemptions", 100))
    program, reward_id = getattr(args, "program", "default"), getattr(args, "reward", "coupon-5")
    key_file = Path(getattr(args, "api_key_file", REPO / ".run" / "api-key"))
    mixed = getattr(args, "ledger_mixed_rate", None)
    if count < 1 or clients < 1:
        print("✘ --redemptions and --clients must be at least 1", file=sys.stderr)
        return 2
    settings, run_id = Settings(), uuid.uuid4().hex[:8]
    print(f"\nJifen redemption bench {run_id}: {count:,} redemptions of {program}/{reward_id} by {clients} clients, "
          f"each waiting for its outcome (?wait={WAIT_S})")
    print(f"  start: {machine()}", flush=True)
    try:
        token = (await asyncio.to_thread(key_file.read_text)).strip()
    except OSError as exc:
        print(f"\n✘ no API key in {key_file} ({exc.strerror}): `make up` writes one, or pass --api-key-file",
              file=sys.stderr)
        return 1
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=getattr(args, "redemption_url", "http://127.0.0.1:8103"), headers=headers,
                                 timeout=WAIT_S + 30, limits=limits) as http, \
            httpx.AsyncClient(base_url=getattr(args, "ledger_url", "http://127.0.0.1:8102"), headers=headers,
                              timeout=30) as ledger:
        try:
            await ready(http, "redemption")
            await ready(ledger, "the ledger")
            programme = Catalogue.load(settings.programmes_dir, RedemptionProgramme).at(program, datetime.now(UTC))
            if programme is None:
                raise BenchError(f"no programme {program!r} in {settings.programmes_dir}")
            p = plan(programme, reward_id, solo + count, run_id)
            print(f"\n1. {len(p.members):,} members of the bench's own, each credited {p.price * p.per_member:,} "
                  f"points ({p.per_member} × {p.price}: the most the programme's limits let one redeem today)",
                  flush=True)
            took = await credit(settings, ledger, p, run_id)
            print(f"  credited in {took:.1f}s")
            alone, asks = p.split(solo)
            floor = None
            if alone:
                print(f"\n2. {len(alone):,} redemptions by one client: the latency with nothing queued", flush=True)
                floor = await redeem(http, p, alone, 1)
            print(f"\n3. {len(asks):,} redemptions by {clients} clients", flush=True)
            before = await ledger_commands_applied(ledger)
            run = await redeem(http, p, asks, clients)
            after = await ledger_commands_applied(ledger)
            if before is not None and after is not None:
                run.ledger_commands = after - before
        except BenchError as exc:
            print(f"\n✘ {exc}\n  end: {machine()}", file=sys.stderr)
            return 1
    return report(run, floor, len(asks), clients, mixed)


def report(run: Run, floor: Run | None, asked: int, clients: int, mixed: float | None) -> int:
    completed = run.outcomes["completed"]
    per_s = completed / run.seconds if run.seconds > 0 else 0.0
    print(f"\nResults: {completed:,} of {asked:,} completed in {run.seconds:.1f}s by {clients} clients")
    print(f"  {'redemptions completed end to end':<44}{per_s:>12,.0f} /s  (target {TARGET_PER_S:,}/s)")
    print(f"  {'?wait answer, p50':<44}{percentile(run.latencies, 0.50) * 1000:>12,.1f} ms")
    print(f"  {'?wait answer, p99':<44}{percentile(run.latencies, 0.99) * 1000:>12,.1f} ms  "
          f"(target {TARGET_P99_MS} ms)")
    print(f"  {'?wait answer, max':<44}{max(run.latencies, default=float('nan')) * 1000:>12,.1f} ms")
    if floor is not None and floor.latencies:
        print(f"  {'one client alone: ?wait p50 / p99':<44}{percentile(floor.latencies, 0.50) * 1000:>12,.1f} ms"
              f" / {percentile(floor.latencies, 0.99) * 1000:,.1f} ms  ({1 / statistics.fmean(floor.latencies):,.1f}"
              " redemptions/s)")
    # Each completed redemption is two ledger commands (the hold placed, then captured).
    if run.ledger_commands is not None and run.seconds > 0:
        print(f"  {'ledger commands applied meanwhile':<44}{run.ledger_commands / run.seconds:>12,.0f} /s  "
              f"(2 per redemption, and whatever else the stack sent)")
    reference = mixed if mixed is not None else TARGET_MIXED_PER_S
    said = "measured by `jifen bench --mode ledger`" if mixed is not None else "its target; measure it with " \
                                                                              "`jifen bench --mode ledger`"
    print(f"  {'the ledger alone, mixed commands':<44}{reference:>12,.0f} /s  ({said})")
    print(f"  {'redemptions at that rate, at most':<44}{reference / 2:>12,.0f} /s  "
          f"(this run: {per_s / (reference / 2):.0%} of it)")
    refused = {what: n for what, n in (run.outcomes + (floor.outcomes if floor else Counter())).items()
               if what != "completed"}
    print(f"\nChecks\n  {'✔' if not refused else '✘'} every redemption completed"
          + "".join(f"\n      {n:,} answered {what}" for what, n in sorted(refused.items())))
    print(f"\n  end: {machine()}\n")
    return 0 if not refused else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redemption", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return asyncio.run(run_redemption_bench(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
