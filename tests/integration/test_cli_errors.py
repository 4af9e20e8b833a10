"""Every `jifen` command given bad arguments or an unreachable dependency answers with a line saying what is wrong
and a non-zero exit, never a traceback (found: `ledger verify --database-url notaurl`, `tiers rebuild` likewise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main

JIFEN = str(Path(sys.executable).parent / "jifen")
NOWHERE = "http://127.0.0.1:1"
# Nothing is reachable: the dependencies named by the environment are not there.
ENV = {"PATH": "/usr/bin:/bin", "JIFEN_KAFKA_BOOTSTRAP": "127.0.0.1:1",
       "JIFEN_DATABASE_URL": "postgresql://nobody:x@127.0.0.1:1/none"}
EXAMPLE = Path(__file__).parents[2] / "examples" / "purchase.json"

BAD = [
    ["simulate", "--count", "0"],
    ["simulate", "--rate", "fast"],
    ["publish"],
    ["publish", "/nonexistent/event.json"],
    ["publish", str(EXAMPLE)],  # Kafka unreachable
    ["topics"],
    ["topics", "create"],  # Kafka unreachable
    ["topics", "check", "--wait", "soon"],
    ["ledger", "verify", "--database-url", "notaurl"],
    ["ledger", "verify", "--database-url", "postgresql://nobody:x@127.0.0.1:1/none"],
    ["tiers", "rebuild", "--program", "default", "--database-url", "notaurl"],
    ["insight", "rebuild", "--program", "default", "--database-url", "notaurl"],
    ["insight", "rebuild", "--program", "default"],
    ["insight", "rebuild", "--program", "nosuchprogramme"],
    ["insight", "rebuild"],
    ["keys", "list", "--database-url", "notaurl"],
    ["keys", "create", "--name", "x", "--scope", "everything"],
    ["keys", "revoke"],
    ["programme", "check", "/nonexistent/programme.yaml"],
    ["programme", "summary", "default", "--url", NOWHERE],
    ["programme", "summary", "default", "--url", "notaurl"],
    ["programme"],
    ["earn", "explain", "/nonexistent/event.json"],
    ["points", "award", "ann", "five", "--reason", "x"],
    ["points", "adjust", "ann", "0", "--reason", "x"],
    ["points", "award", "ann", "5", "--reason", "x", "--url", NOWHERE],
    ["points", "transfer", "ann", "--reason", "x"],
    ["points", "reverse", "ann", "not-an-entry", "--reason", "x"],
    ["member"],
    ["member", "ann", "--url", NOWHERE],
    ["member", "ann", "--url", "notaurl"],
    ["member", "ann", "--entries", "0"],
    ["member", "ann", "--entries", "many"],
    ["dlq", "list", "--nope"],
    ["dlq", "show", "nosuch.topic"],
    ["dlq", "replay"],
    ["bench", "--mode", "nope"],
    ["stack", "sideways"],
    ["asyncapi", "--nope"],
    ["nosuchcommand"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_a_bad_argument_is_answered_in_a_line_not_a_traceback(
        argv: list[str], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process (the same argv, parser and code as `jifen`; a new interpreter per case cost seconds, for some
    40 cases), with only ENV's JIFEN_ settings: an exception escaping main would fail the test as a traceback would."""
    for name in [n for n in os.environ if n.startswith("JIFEN_")]:
        monkeypatch.delenv(name)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's answer to a bad argument
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capfd.readouterr()
    said = out + err
    assert code != 0, said
    assert "Traceback" not in said, said
    assert "✘" in err or "error:" in err, said


def test_the_console_script_answers_a_bad_argument_in_a_line() -> None:
    """The installed `jifen` as a process, in an environment of only ENV (what the in-process cases stand for)."""
    done = subprocess.run([JIFEN, "ledger", "verify", "--database-url", "notaurl"], capture_output=True, text=True,
                          timeout=120, env=ENV)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "Traceback" not in said, said
    assert "✘" in done.stderr, said
