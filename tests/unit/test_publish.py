"""`jifen publish` checks every event as the services will, and sends nothing unless all pass (no Kafka needed:
tests/e2e/test_quickstart.py sends them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.support import REPO
from tests.support import in_process as jifen

EXAMPLES = REPO / "examples"



def test_every_example_is_checked_as_the_services_check_it(capfd: pytest.CaptureFixture[str]) -> None:
    """The shipped examples pass `jifen publish --dry-run`; a broken one names the file and the field."""
    names = sorted(p.name for p in EXAMPLES.glob("*.json"))
    assert len(names) >= 8
    code, out, err = jifen(capfd, "publish", "--dry-run", *(str(EXAMPLES / n) for n in names))
    assert code == 0, out + err
    assert f"✔ {len(names)} event(s) checked; nothing sent" in out


def test_publish_refuses_what_the_services_would_refuse_and_sends_nothing(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text((EXAMPLES / "purchase.json").read_text().replace('"total": "250.00"', '"total": "-1"'))
    outgoing = tmp_path / "outgoing.json"
    outgoing.write_text('{"specversion": "1.0", "id": "x", "source": "s", "type": "jifen.points.entry.posted.v1", '
                        '"time": "2026-01-01T00:00:00Z", "data": {}}')
    code, out, err = jifen(capfd, "publish", str(EXAMPLES / "checkin.json"), str(bad), str(outgoing),
                           "--kafka-bootstrap", "127.0.0.1:1")
    assert code == 1, out + err
    assert "bad.json: the services would refuse it as invalid_data: total" in err
    assert "is not sent to Jifen from outside" in err and "nothing sent: 2 problem(s)" in err
    assert "✔" not in out  # checked before anything is sent: the good check-in did not go either


def test_an_event_further_ahead_than_the_services_tolerate_is_refused_as_future_event(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Earn dead-letters an event more than `future_tolerance_s` (300 s) ahead of its clock; so does the check."""
    event = orjson.loads((EXAMPLES / "purchase.json").read_bytes())
    ahead = tmp_path / "ahead.json"
    ahead.write_bytes(orjson.dumps({**event, "time": (datetime.now(UTC) + timedelta(minutes=12)).isoformat()}))
    code, out, err = jifen(capfd, "publish", "--dry-run", str(ahead))
    assert code == 1, out + err
    assert "ahead.json: the services would refuse it as future_event" in err and "300s ahead" in err
    assert "nothing sent" in err and "would send" not in out
    soon = tmp_path / "soon.json"  # within the tolerance: a till's clock a minute fast is fine
    soon.write_bytes(orjson.dumps({**event, "time": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}))
    code, out, err = jifen(capfd, "publish", "--dry-run", str(soon))
    assert code == 0 and "1 event(s) checked" in out, out + err
