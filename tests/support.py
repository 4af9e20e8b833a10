"""Test support: real Kafka and PostgreSQL (testcontainers, local processes, or given by the environment),
an isolated database and topic prefix per test, and services run as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from deploy.local.infra import REPO, Kafka, Postgres, create_topics
from shared import auth, envelope
from shared import db as shared_db
from shared.contracts import topics
from shared.contracts.ledger_commands import LedgerCommand
from shared.contracts.topics import all_topics
from shared.kafka import Cluster, client_options


@dataclass
class Infra:
    bootstrap: str
    admin_dsn: str  # a database we may CREATE DATABASE from
    postgres: Postgres | None = None  # set when the tests own the server (and may restart it)
    stop: Callable[[], None] = lambda: None

    async def new_database(self, prefix: str, schema: str | None = None, migrations: Path | None = None) -> str:
        """A fresh database of the test server, named `prefix` and a random suffix; with a schema and its
        migrations, migrated. Returns its URL."""
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        dsn = f"{self.admin_dsn.rpartition('/')[0]}/{name}"
        if schema is not None and migrations is not None:
            await shared_db.migrate(dsn, schema, migrations)
        return dsn


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_infra() -> Infra:
    """Environment first (JIFEN_TEST_KAFKA_BOOTSTRAP + JIFEN_TEST_DATABASE_URL), then testcontainers when a
    Docker engine answers, else local processes on ports of their own (so `make up` can run beside)."""
    env_kafka, env_db = os.environ.get("JIFEN_TEST_KAFKA_BOOTSTRAP"), os.environ.get("JIFEN_TEST_DATABASE_URL")
    if env_kafka and env_db:
        # `make test` (tests/run.py) starts the servers once for every pytest process and says where they run, so
        # the tests that stop PostgreSQL may do so here too.
        owned = os.environ.get("JIFEN_TEST_POSTGRES_RUN_DIR")
        postgres = Postgres(Path(owned), port=int(env_db.rpartition(":")[2].split("/")[0])) if owned else None
        return Infra(env_kafka, env_db, postgres=postgres)
    if docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        kafka_c = KafkaContainer().with_kraft()
        pg_c = PostgresContainer("postgres:16", driver=None)
        kafka_c.start()
        pg_c.start()

        def stop_containers() -> None:
            kafka_c.stop()
            pg_c.stop()

        return Infra(kafka_c.get_bootstrap_server(), pg_c.get_connection_url(), stop=stop_containers)
    run_dir = REPO / ".run" / "test"
    kafka = Kafka(run_dir, port=19092, controller_port=19093)
    postgres = Postgres(run_dir, port=15432)
    postgres.start()
    kafka.start()

    def stop_local() -> None:
        kafka.stop()
        postgres.stop()

    return Infra(kafka.bootstrap, postgres.url, postgres=postgres, stop=stop_local)


@dataclass
class World:
    """One test's isolated slice of the real infrastructure: its own database and topic prefix."""

    infra: Infra
    database_url: str
    prefix: str
    token: str = ""  # an admin API key of this world's database
    processes: list[ServiceProcess] = field(default_factory=list)

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def env(self, port: int) -> dict[str, str]:
        return {**os.environ, "JIFEN_DATABASE_URL": self.database_url, "JIFEN_KAFKA_BOOTSTRAP": self.infra.bootstrap,
                "JIFEN_TOPIC_PREFIX": self.prefix, "JIFEN_HTTP_PORT": str(port), "JIFEN_RETRY_MAX_DELAY_S": "1",
                "JIFEN_OUTBOX_POLL_INTERVAL_S": "0.5"}

    def service(self, name: str, **env: str) -> ServiceProcess:
        """A service process; `env` adds settings, e.g. JIFEN_SWEEP_INTERVAL_S="0.5"."""
        proc = ServiceProcess(name, self, free_port(), env)
        self.processes.append(proc)
        return proc

    async def start_ledger_and_earn(self) -> tuple[ServiceProcess, ServiceProcess]:
        ledger, earn = self.service("ledger").start(), self.service("earn").start()
        await ledger.ready()
        await earn.ready()
        return ledger, earn

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)


async def make_world(infra: Infra, partitions: int = 3) -> World:
    dsn = await infra.new_database("t_")
    prefix = f"t{dsn.rpartition('_')[2]}."
    await create_topics(infra.bootstrap, all_topics(prefix), partitions)
    await shared_db.migrate(dsn, auth.SCHEMA, auth.MIGRATIONS, with_shared=False)
    conn = await asyncpg.connect(dsn)
    try:
        _, token = await auth.create_key(conn, "e2e", ["admin"])
    finally:
        await conn.close()
    return World(infra, dsn, prefix, token)


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")  # a plain-text answer (a 500 from outside the kit) says so in the test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """A Jifen service as a real OS process, so it can be killed with SIGKILL mid-batch."""

    def __init__(self, name: str, world: World, port: int, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.env = env or {}
        self.world = world
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = REPO / ".run" / "test" / "logs" / f"{world.prefix}{name}-{port}.log"

    def start(self) -> ServiceProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"], cwd=REPO,
                                         env={**self.world.env(self.port), **self.env}, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """GET with the world's admin key (or `token`; "" for none)."""
        return self.request("GET", path, token=token)

    def post(self, path: str, body: Any = None, token: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return self.request("POST", path, body, token=token, headers=headers)

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _, answer = self.exchange(method, path, body, token, headers)
        return status, answer

    def exchange(self, method: str, path: str, body: Any = None, token: str | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """The status, the headers and the JSON body of one request (a body that is not JSON, as text), with the
        world's admin key (or `token`; "" for none)."""
        token = self.world.token if token is None else token
        sent = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        data = None
        if body is not None:
            data, sent["Content-Type"] = orjson.dumps(body), "application/json"
        request = urllib.request.Request(self.url(path), data=data, headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, dict(response.headers), _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), _json(exc.read())

    async def ready(self, timeout: float = 60.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited; see {self.log}"
            try:
                if self.get("/health/ready")[0] == 200:
                    return self
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{self.name} not ready in {timeout}s; see {self.log}"
            await asyncio.sleep(0.25)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def jifen(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run the `jifen` command line as a user would; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli.main", *args, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def in_process(capture: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`jifen ARGS…` in this process (the same argv, parser and code; a new interpreter per call costs seconds);
    returns (exit code, stdout, stderr) as `capture` (capsys or capfd) caught them."""
    from cli.main import main

    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's answer to a bad option
        code = int(exit_.code or 0)
    out, err = capture.readouterr()
    return code, out, err


async def send(bootstrap: Cluster | str, topic: str,
               messages: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(**client_options(bootstrap), enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=headers) for key, value, headers in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(bootstrap: Cluster | str, topic: str, expect: int,
                   timeout: float = 30.0) -> list[ConsumerRecord[Any, Any]]:
    """Read a topic from the start until `expect` records arrived (or the timeout), then a moment longer
    so that extra, unexpected records would be seen too."""
    consumer = AIOKafkaConsumer(topic, **client_options(bootstrap), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for part in batch.values():
                records.extend(part)
            if len(records) >= expect and settle_until is None:
                settle_until = time.monotonic() + 1.0
            if settle_until is not None and time.monotonic() > settle_until:
                break
    finally:
        await consumer.stop()
    return records


async def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


def headers_of(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (record.headers or ())}


STRUCTURED = [("content-type", b"application/cloudevents+json")]
TESTS_DIR = Path(__file__).parent


async def send_commands(world: World, *commands: LedgerCommand) -> None:
    """Ledger commands onto the world's commands topic, as a service would emit them."""
    await send(world.infra.bootstrap, world.topic(topics.LEDGER_COMMANDS), [
        (c.member_id.encode(), envelope.encode(c.idempotency_key, "test", c.TYPE, c.occurred_at,
                                               c.model_dump(mode="json")), STRUCTURED)
        for c in commands])
