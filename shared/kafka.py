"""How every Kafka client reaches the cluster: its address and, for a managed or self-run cluster, TLS and SASL.

One `Cluster` built from the settings (`Settings.kafka`) gives the options of every aiokafka client (`options()`)
and the FastStream broker's `security`, so the services, the CLI, the bench and the tests cannot connect in two ways.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

from aiokafka.conn import create_conn
from aiokafka.errors import AuthenticationFailedError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

log = logging.getLogger(__name__)
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SECURITY_PROTOCOLS: tuple[SecurityProtocol, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: tuple[SaslMechanism, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_FASTSTREAM_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


@dataclass(frozen=True)
class Cluster:
    """A Kafka cluster as a client reaches it. Shown (in messages) as its bootstrap address, never its secrets."""

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    # PEM files: the CA that signed the brokers' certificates (the system's CAs when none), and a client
    # certificate and key for a cluster that asks for one (mutual TLS).
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.bootstrap

    def at(self, bootstrap: str | None) -> Cluster:
        """The same cluster reached at another address (a command's `--bootstrap`), when one is given."""
        return replace(self, bootstrap=bootstrap) if bootstrap else self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every connection (hostnames checked), built once per cluster."""
        if not self.uses_tls:
            return None
        return create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile,
                                  password=self.ssl_key_password)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of an aiokafka client (producer, consumer, admin) for this cluster."""
        found: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.uses_tls:
            found["ssl_context"] = self.ssl_context
        if self.uses_sasl:
            found |= {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.sasl_username,
                      "sasl_plain_password": self.sasl_password}
        return found

    def security(self) -> BaseSecurity | None:
        """The same, as a FastStream broker's `security=` (None for plaintext)."""
        if self.uses_sasl:
            sasl = _FASTSTREAM_SASL[self.sasl_mechanism]
            return sasl(self.sasl_username or "", self.sasl_password or "", ssl_context=self.ssl_context,
                        use_ssl=self.uses_tls)
        if self.uses_tls:
            return BaseSecurity(ssl_context=self.ssl_context, use_ssl=True)
        return None


def client_options(cluster: Cluster | str) -> dict[str, Any]:
    """aiokafka options for a cluster, or for a bare bootstrap address (plaintext, as the local stack's)."""
    return (cluster if isinstance(cluster, Cluster) else Cluster(cluster)).options()


async def diagnose(cluster: Cluster, timeout_s: float = 5.0) -> str | None:
    """Why the cluster refuses this process, from one connection to its first bootstrap server (None: it takes it).
    aiokafka's clients only log the cause and raise "Unable to bootstrap"; a readiness probe should say which."""
    host, _, port = cluster.bootstrap.split(",")[0].strip().rpartition(":")
    opts = cluster.options()
    try:
        conn = await asyncio.wait_for(create_conn(
            host, int(port), ssl_context=opts.get("ssl_context"), security_protocol=cluster.security_protocol,
            sasl_mechanism=opts.get("sasl_mechanism"), sasl_plain_username=opts.get("sasl_plain_username"),
            sasl_plain_password=opts.get("sasl_plain_password"), request_timeout_ms=int(timeout_s * 1000)),
            timeout_s)
    except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
        return (f"authentication failed for {cluster.sasl_username!r} ({cluster.sasl_mechanism}): check "
                f"JIFEN_KAFKA_SASL_USERNAME and JIFEN_KAFKA_SASL_PASSWORD ({exc})")
    except ssl.SSLError as exc:
        return f"TLS with {cluster.bootstrap} failed: {exc} (check JIFEN_KAFKA_SSL_CAFILE)"
    except (OSError, TimeoutError) as exc:
        return f"cannot connect to {cluster.bootstrap}: {type(exc).__name__}: {exc}"
    except Exception as exc:  # whatever else the broker answered: say it as it is
        return f"{cluster.bootstrap}: {type(exc).__name__}: {exc}"
    conn.close()
    return None


@dataclass
class Startup:
    """A process's Kafka clients started in the background and retried until the cluster takes them, so a process
    whose cluster is away or refuses it (a wrong password) keeps serving and says why in /health/ready, instead of
    exiting to be restarted in a loop."""

    cluster: Cluster
    max_delay_s: float = 5.0
    error: str | None = None  # why the cluster did not take the last attempt
    done: bool = False

    async def run(self, *steps: Callable[[], Awaitable[object]]) -> None:
        """Each step in turn (a client's `start`), each retried with backoff until it succeeds."""
        delay = 0.5
        for step in steps:
            while True:
                try:
                    await step()
                    break
                except Exception as exc:  # the cluster away or refusing: the reason is kept for readiness
                    self.error = await diagnose(self.cluster) or f"{type(exc).__name__}: {exc}"
                    log.warning("Kafka did not take this process; retrying", extra={"error": self.error})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_delay_s)
        self.error, self.done = None, True
