"""The cluster settings: a half-given combination is refused naming the variable; a whole one gives every client
the same TLS and SASL options."""

from __future__ import annotations

import pytest
from faststream.security import SASLScram512
from pydantic import ValidationError

from shared.settings import Settings


def test_sasl_without_a_username_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIFEN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("JIFEN_KAFKA_SASL_PASSWORD", "s3cret")
    with pytest.raises(ValidationError, match="JIFEN_KAFKA_SASL_USERNAME is required") as refused:
        Settings()
    assert "s3cret" not in str(refused.value)  # the values given are not echoed


def test_credentials_without_sasl_and_a_missing_ca_file_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIFEN_KAFKA_SASL_USERNAME", "jifen")
    monkeypatch.setenv("JIFEN_KAFKA_SSL_CAFILE", "/nowhere/ca.pem")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "SECURITY_PROTOCOL is PLAINTEXT" in str(refused.value)
    assert "JIFEN_KAFKA_SSL_CAFILE: no file at /nowhere/ca.pem" in str(refused.value)


def test_sasl_ssl_gives_every_client_tls_and_scram(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SECURITY_PROTOCOL": "sasl_ssl", "SASL_MECHANISM": "scram-sha-512",
                        "SASL_USERNAME": "jifen", "SASL_PASSWORD": "s3cret", "BOOTSTRAP": "k1:9093,k2:9093"}.items():
        monkeypatch.setenv(f"JIFEN_KAFKA_{name}", value)
    cluster = Settings().kafka
    options = cluster.options()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "jifen" and options["sasl_plain_password"] == "s3cret"
    assert options["ssl_context"].check_hostname
    security = cluster.security()
    assert isinstance(security, SASLScram512) and security.use_ssl and security.ssl_context is options["ssl_context"]
    assert str(cluster) == "k1:9093,k2:9093" and "s3cret" not in repr(cluster)


def test_plaintext_stays_plaintext() -> None:
    cluster = Settings().kafka
    assert cluster.options() == {"bootstrap_servers": cluster.bootstrap, "security_protocol": "PLAINTEXT"}
    assert cluster.security() is None
