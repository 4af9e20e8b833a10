"""`jifen stack up|down|status`: Kafka, PostgreSQL and every service as local processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.local.infra import (
    REPO,
    Kafka,
    Postgres,
    Prometheus,
    StackError,
    ensure_topics,
    log,
    pid_alive,
    spawn,
    stop_pid,
    tail,
)
from shared import auth, db
from shared.settings import DEFAULT_DATABASE_URL, Settings


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    module: str
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


SERVICES = (ServiceProcess("ledger", "services.ledger", 8102), ServiceProcess("earn", "services.earn", 8101),
            ServiceProcess("tiers", "services.tiers", 8104), ServiceProcess("referral", "services.referral", 8105),
            ServiceProcess("redemption", "services.redemption", 8103),
            ServiceProcess("insight", "services.insight", 8106))


class Stack:
    def __init__(self, run_dir: Path | None = None) -> None:
        self.settings = Settings()
        self.run_dir = run_dir or Path(os.environ.get("JIFEN_RUN_DIR", REPO / ".run"))
        self.external_db = "JIFEN_DATABASE_URL" in os.environ
        self.external_kafka = "JIFEN_KAFKA_BOOTSTRAP" in os.environ
        self.kafka = Kafka(self.run_dir, port=int(self.settings.kafka_bootstrap.rsplit(":", 1)[1]))
        self.postgres = Postgres(self.run_dir)
        self.prometheus = Prometheus(self.run_dir) if os.environ.get("JIFEN_PROMETHEUS", "on") != "off" else None

    def pid_file(self, name: str) -> Path:
        return self.run_dir / "pids" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def up(self) -> None:
        print(f"Starting the Jifen stack (run folder {self.run_dir})", flush=True)
        if self.external_db:
            log(f"PostgreSQL: using JIFEN_DATABASE_URL ({_redact(self.settings.database_url)})")
        else:
            self.postgres.start()
        if self.external_kafka:
            log(f"Kafka: using JIFEN_KAFKA_BOOTSTRAP ({self.settings.kafka_bootstrap})")
        else:
            self.kafka.start()
        ensure_topics(self.settings.kafka, self.settings.topic_prefix,
                      int(os.environ.get("JIFEN_PARTITIONS", "6")))
        created = ensure_api_key(self.database_url, self.api_key_file)
        log(f"API key: {'a new admin key in' if created else 'the admin key in'} {self.api_key_file} "
            "(send it as `Authorization: Bearer $(cat .run/api-key)`)")
        for service in SERVICES:
            self.start_service(service, self.service_env())
        if self.prometheus is not None:
            self.prometheus.start({s.name: s.port for s in SERVICES})

    @property
    def database_url(self) -> str:
        return self.settings.database_url if self.external_db else DEFAULT_DATABASE_URL.replace(
            ":5432/", f":{self.postgres.port}/")

    @property
    def api_key_file(self) -> Path:
        return self.run_dir / "api-key"

    def service_env(self, **extra: str) -> dict[str, str]:
        """The environment the services run with: this one, pointed at the stack's database."""
        return {**os.environ, "JIFEN_DATABASE_URL": self.database_url, **extra}

    def restart_service(self, name: str, **extra_env: str) -> None:
        """Stop one service and start it again with extra settings (the bench swaps earn's programmes)."""
        service = next(s for s in SERVICES if s.name == name)
        stop_pid(self.pid_file(name), name)
        self.start_service(service, self.service_env(**extra_env))

    def start_service(self, service: ServiceProcess, env: dict[str, str], timeout: float = 60.0) -> None:
        pid_file = self.pid_file(service.name)
        if pid_alive(pid_file):
            log(f"{service.name} already running (pid {pid_alive(pid_file)}) on :{service.port}")
            return
        pid = spawn([sys.executable, "-m", service.module], self.log_file(service.name), pid_file, env=env)
        deadline = time.monotonic() + timeout
        while not http_ok(service.url("/health/ready")):
            if not pid_alive(pid_file):
                raise StackError(f"{service.name} exited during start; last log lines:\n"
                                 f"{tail(self.log_file(service.name))}")
            if time.monotonic() > deadline:
                raise StackError(f"{service.name} not ready after {timeout:.0f}s; see {self.log_file(service.name)}")
            time.sleep(0.3)
        log(f"{service.name} ready (pid {pid}) on http://127.0.0.1:{service.port}")

    def down(self) -> None:
        print("Stopping the Jifen stack", flush=True)
        Prometheus(self.run_dir).stop()  # whatever JIFEN_PROMETHEUS says now: stop one the stack started
        for service in reversed(SERVICES):
            stop_pid(self.pid_file(service.name), service.name)
        self.kafka.stop()
        self.postgres.stop()

    def status(self) -> bool:
        healthy = True
        rows: list[tuple[str, bool, str]] = []
        if self.external_db:
            rows.append(("postgres", True, f"external: {_redact(self.settings.database_url)}"))
        else:
            pid = self.postgres.running_pid()
            rows.append(("postgres", pid is not None,
                         f"pid {pid}, port {self.postgres.port}" if pid else "not running (no postmaster.pid)"))
        if self.external_kafka:
            rows.append(("kafka", True, f"external: {self.settings.kafka_bootstrap}"))
        else:
            pid = pid_alive(self.kafka.pid_file)
            rows.append(("kafka", pid is not None,
                         f"pid {pid}, {self.kafka.bootstrap}" if pid else "not running"))
        for service in SERVICES:
            pid = pid_alive(self.pid_file(service.name))
            if pid is None:
                rows.append((service.name, False, "not running"))
                continue
            body = _http_get(service.url("/health/ready"))
            rows.append((service.name, body is not None and '"ready":true' in body,
                         f"pid {pid}, :{service.port}, ready: {body or 'no answer'}"))
        if self.prometheus is not None:
            pid = pid_alive(self.prometheus.pid_file)
            rows.append(("prometheus", pid is not None and http_ok(f"{self.prometheus.url}/-/ready"),
                         f"pid {pid}, {self.prometheus.url}" if pid else "not running"))
        for name, ok, why in rows:
            healthy &= ok
            print(f"  {'✔' if ok else '✘'} {name:<9} {why}")
        return healthy


def ensure_api_key(database_url: str, path: Path) -> bool:
    """A local admin key in `path` (readable by its owner only), kept while it still works; True if made anew."""
    held = path.read_text() if path.exists() else None
    token = asyncio.run(_admin_key(database_url, held))
    if token is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return True


async def _admin_key(database_url: str, held: str | None) -> str | None:
    """None while the held key still works, else a new admin key."""
    await db.migrate(database_url, auth.SCHEMA, auth.MIGRATIONS, with_shared=False)
    conn = await db.connect(database_url)
    try:
        parts = auth.split_token(held) if held else None
        if parts is not None and await conn.fetchval(
                f"SELECT 1 FROM {auth.SCHEMA}.api_keys WHERE key_id = $1 AND revoked_at IS NULL", parts[0]):
            return None
        _, token = await auth.create_key(conn, "local-admin (make up)", ["admin"])
        return token
    finally:
        await conn.close()


def _http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
    except OSError:
        return None


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    head, tail_ = url.split("@", 1)
    return head.rsplit(":", 1)[0] + ":***@" + tail_
