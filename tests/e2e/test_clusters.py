"""A purchase through earn and the ledger over a Kafka that takes SASL_SSL (SCRAM) and a PostgreSQL that takes TLS
only, as a managed cluster would; a wrong Kafka password is a readiness error, not a crash loop.

Both servers are started here, beside the suite's own, with a CA and a server certificate made for the test.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import orjson
import pytest

from deploy.local.infra import REPO, Kafka, Postgres, create_topics
from shared import auth, db
from shared.contracts import topics
from shared.contracts.topics import all_topics
from shared.kafka import Cluster
from shared.simulation import purchase_event
from tests.conftest import check_ledger_invariants
from tests.support import STRUCTURED, Infra, World, free_port, send, wait_for

pytestmark = pytest.mark.e2e
NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
USER, PASSWORD = "jifen", "scram-secret-7"


@dataclass
class Secured:
    """The servers of this test and how a client reaches them."""

    kafka: Cluster
    database_url: str  # TLS, the server's certificate checked against the test's CA
    ca: Path

    def env(self, password: str = PASSWORD) -> dict[str, str]:
        return {"JIFEN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "JIFEN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "JIFEN_KAFKA_SASL_USERNAME": USER, "JIFEN_KAFKA_SASL_PASSWORD": password,
                "JIFEN_KAFKA_SSL_CAFILE": str(self.ca)}


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost (the brokers' and the database's)."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Jifen test CA", cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=folder)
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def inline(pem: Path) -> str:
    """A PEM file as one line of server.properties (the escaped line breaks are read back as line breaks)."""
    return pem.read_text().strip().replace("\n", "\\n")


def secured_kafka(home: Path, ca: Path, cert: Path, key: Path) -> tuple[Kafka, int]:
    """The local Kafka with a SASL_SSL listener beside its plaintext one (which only the broker itself and
    `Kafka.start`'s readiness check use), SCRAM-SHA-512, the user created as the storage is formatted."""
    port, controller, secure = free_port(), free_port(), free_port()
    extra = f"""\
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{secure}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.certificate.chain={inline(cert)}
listener.name.sasl_ssl.ssl.keystore.key={inline(key)}
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.certificates={inline(ca)}
"""
    kafka = Kafka(home, port=port, controller_port=controller, heap="384m", extra_config=extra,
                  scram_users=(f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",))
    return kafka, secure


def secured_postgres(home: Path, cert: Path, key: Path) -> Postgres:
    """A PostgreSQL that takes TLS connections only (hostssl; plaintext TCP is rejected)."""
    tls = home / "postgres-tls"
    tls.mkdir(parents=True, exist_ok=True)
    server_key = tls / "server.key"
    shutil.copy(cert, tls / "server.pem")
    shutil.copy(key, server_key)
    server_key.chmod(0o600)
    for path in (tls, tls / "server.pem", server_key):
        shutil.chown(path, "postgres", "postgres")  # the server refuses a key others may read
    hba = ("local all all trust\n"
           "hostssl all all 127.0.0.1/32 scram-sha-256\n"
           "hostnossl all all 0.0.0.0/0 reject\n")
    return Postgres(home, port=free_port(), extra_options=f"-c ssl=on -c ssl_cert_file={tls / 'server.pem'} "
                                                          f"-c ssl_key_file={server_key}", hba=hba)


@pytest.fixture
async def secured() -> AsyncIterator[Secured]:
    home = REPO / ".run" / "test" / f"clusters-{uuid.uuid4().hex[:8]}"
    ca, cert, key = certificates(home / "certs")
    kafka, secure_port = secured_kafka(home, ca, cert, key)
    postgres = secured_postgres(home, cert, key)
    try:
        # Both at once: most of the wait is the JVM's start.
        await asyncio.gather(asyncio.to_thread(kafka.start), asyncio.to_thread(postgres.start))
        url = f"{postgres.url}?sslmode=verify-full&sslrootcert={ca}"
        cluster = Cluster(f"127.0.0.1:{secure_port}", "SASL_SSL", "SCRAM-SHA-512", USER, PASSWORD, str(ca))
        yield Secured(cluster, url, ca)
    finally:
        kafka.stop()
        postgres.stop(mode="immediate")
        shutil.rmtree(home, ignore_errors=True)


async def secured_world(secured: Secured) -> World:
    """As `make_world`, but every client goes through SASL_SSL and TLS."""
    prefix = f"c{uuid.uuid4().hex[:8]}."
    await create_topics(secured.kafka, all_topics(prefix), partitions=3)
    await db.migrate(secured.database_url, auth.SCHEMA, auth.MIGRATIONS, with_shared=False)
    conn = await db.connect(secured.database_url)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        _, token = await auth.create_key(conn, "clusters", ["admin"])
    finally:
        await conn.close()
    return World(Infra(secured.kafka.bootstrap, secured.database_url), secured.database_url, prefix, token)


async def test_a_purchase_becomes_points_over_sasl_ssl_and_tls(secured: Secured) -> None:
    plain = secured.database_url.replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await db.connect(plain)  # the server takes TLS only: what passes below went over TLS

    world = await secured_world(secured)
    try:
        ledger = world.service("ledger", **secured.env()).start()
        earn = world.service("earn", **secured.env()).start()
        await ledger.ready()
        await earn.ready()
        event = orjson.dumps(purchase_event("c-1", "pos://store-1", NOW, "alice", "order-c-1", Decimal("42.50"), []))
        await send(secured.kafka, world.topic(topics.PURCHASES), [(b"alice", event, STRUCTURED)])

        async def balance() -> dict[str, object] | None:
            status, body = ledger.get("/v1/programs/default/members/alice/balance")
            return body if status == 200 and body["lifetime_earned"] >= 42 else None

        found = await wait_for(balance, timeout=30, what="alice's points over SASL_SSL")
        assert found["available"] == 42 and found["lifetime_earned"] == 42

        # A wrong password: the process stays up and says why it is not ready, instead of exiting to be restarted.
        wrong = world.service("earn", **secured.env(password="not-the-password")).start()
        deadline = time.monotonic() + 30
        while True:
            assert wrong.proc is not None and wrong.proc.poll() is None, f"earn exited; see {wrong.log}"
            try:
                status, body = wrong.get("/health/ready")
                if status == 503 and "authentication" in str(body.get("kafka", "")).lower():
                    break
            except OSError:
                pass  # not serving yet
            assert time.monotonic() < deadline, f"no readiness error about authentication; see {wrong.log}"
            await asyncio.sleep(0.3)
        assert body["database"] == "ok" and body["ready"] is False
        await asyncio.sleep(3)
        assert wrong.proc.poll() is None, "earn exited on a wrong Kafka password"
        assert wrong.get("/health/ready")[0] == 503
    finally:
        for proc in world.processes:
            proc.stop()
    await check_ledger_invariants(secured.database_url)
