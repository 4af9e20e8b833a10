"""The `jifen` command line: the local stack, the simulated feed, keys, programmes, the ledger's checks, the bench."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import uvloop

from bench import main as bench
from cli import (
    asyncapi,
    dlq,
    earn,
    insight,
    keys,
    ledger,
    member,
    points,
    programme,
    publish,
    report,
    simulate,
    tiers,
    topics,
    whatif,
)
from deploy.local.infra import StackError
from deploy.local.stack import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jifen", description="Jifen points platform tools")
    sub = parser.add_subparsers(dest="command", required=True)
    stack = sub.add_parser("stack", help="run Kafka, PostgreSQL and the services locally",
                           description="The local stack: PostgreSQL, Kafka, every service and Prometheus, as "
                                       "processes of this machine (pids and logs in .run/).",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="actions:\n"
                                  "  up      start PostgreSQL and Kafka (or use JIFEN_DATABASE_URL and "
                                  "JIFEN_KAFKA_BOOTSTRAP),\n"
                                  "          create the topics, write an admin API key to .run/api-key, start each "
                                  "service\n          (waiting until it is ready) and Prometheus; what runs already "
                                  "is left running\n"
                                  "  down    stop the services, Prometheus, Kafka and PostgreSQL the stack started "
                                  "(the data stays)\n"
                                  "  status  each process and whether it runs; exits 1 when one does not")
    stack.add_argument("action", choices=["up", "down", "status"], help="up, down or status (see below)")
    for module in (simulate, publish, keys, programme, points, member, report, whatif, ledger, earn, tiers, insight,
                   dlq, asyncapi, topics, bench):
        module.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        match args.command:
            case "stack":
                return _stack(args.action)
            case "simulate":
                return asyncio.run(simulate.simulate(args))
            case "publish":
                return asyncio.run(publish.run(args))
            case "keys":
                return asyncio.run(keys.run(args))
            case "programme":
                if args.programme_command == "summary":
                    return points.summary(args)
                return programme.show(args) if args.programme_command == "show" else programme.check(args)
            case "points":
                return points.run(args)
            case "member":
                return member.run(args)
            case "report":
                return report.run(args)
            case "whatif":
                return whatif.run(args)
            case "ledger":
                return asyncio.run(ledger.run(args))
            case "earn":
                return earn.explain(args)
            case "tiers":
                return asyncio.run(tiers.run(args))
            case "insight":
                return asyncio.run(insight.run(args))
            case "dlq":
                return asyncio.run(dlq.run(args))
            case "asyncapi":
                return asyncapi.run(args)
            case "topics":
                return asyncio.run(topics.run(args))
            case _:
                # uvloop, as the services run under uvicorn: the bench's own clients take less of the machine.
                return uvloop.run(bench.run_bench(args))
    except StackError as exc:
        print(f"\n✘ {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n✘ interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last guard: a user sees what went wrong, not a traceback (JIFEN_DEBUG=1 shows it)
        if os.environ.get("JIFEN_DEBUG"):
            raise
        print(f"\n✘ {type(exc).__name__}: {exc}\n  (JIFEN_DEBUG=1 shows where)", file=sys.stderr)
        return 1


def _stack(action: str) -> int:
    stack = Stack()
    if action == "up":
        stack.up()
        return 0
    if action == "down":
        stack.down()
        return 0
    return 0 if stack.status() else 1


if __name__ == "__main__":
    sys.exit(main())
