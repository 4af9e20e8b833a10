"""`make test`: the whole suite against one real Kafka and one PostgreSQL, in two parts.

The servers start once (tests/support.start_infra: the environment's, else local processes) and every pytest
process shares them: each test has a database and a topic prefix of its own, so tests run two at a time (pytest-xdist,
one worker per core) without meeting. Tests marked `alone` load the machine on purpose and run after the rest, one at
a time; those marked `stops_postgres` stop the shared server and run last. Arguments are passed to every pytest run
(e.g. `-k insight`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.support import start_infra


def main(argv: list[str]) -> int:
    infra = start_infra()
    env = {**os.environ, "JIFEN_TEST_KAFKA_BOOTSTRAP": infra.bootstrap, "JIFEN_TEST_DATABASE_URL": infra.admin_dsn}
    if infra.postgres is not None:
        env["JIFEN_TEST_POSTGRES_RUN_DIR"] = str(infra.postgres.run_dir)
    workers = os.environ.get("JIFEN_TEST_WORKERS", str(max(2, os.cpu_count() or 2)))
    started = time.monotonic()
    try:
        # The tests that stop PostgreSQL go last: a service started just after a restart of the server meets it
        # cold, and the thousand-request race then sees pool timeouts it never sees otherwise.
        parts = [("the suite, two at a time",
                  ["-n", workers, "--dist", "load", "-m", "not alone and not stops_postgres"]),
                 ("the tests that run alone", ["-m", "alone"]),
                 ("the tests that stop PostgreSQL, alone", ["-m", "stops_postgres"])]
        codes = []
        for title, options in parts:
            print(f"\n=== {title} ===", flush=True)
            code = subprocess.call([sys.executable, "-m", "pytest", *options, *argv], env=env)
            codes.append(0 if code == 5 else code)  # 5: nothing selected (a -k that matches only one part)
        print(f"\n=== make test: {'passed' if not any(codes) else 'FAILED'} in {time.monotonic() - started:.0f} s "
              f"(exit codes {codes}) ===", flush=True)
        return max(codes)
    finally:
        infra.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
