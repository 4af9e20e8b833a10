"""The ledger under test and what watches it: a ledger process of the bench's own, py-spy on it, and the CPU
each part of the stack uses, from /proc."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.baselines import BenchError
from deploy.local.infra import REPO, tail
from deploy.local.stack import http_ok
from shared.settings import Settings

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _append(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


class PrivateService:
    """`python -m services.<service>` with its topics under `prefix`, its tables in `schema`, its own port and
    consumer group: a bench's own copy of a service, beside the stack's."""

    service = "ledger"

    def __init__(self, settings: Settings, prefix: str, schema: str, log_file: Path, **env: str) -> None:
        self.settings = settings
        self.prefix = prefix
        self.schema = schema
        self.log_file = log_file
        self.env = env
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.port = port = _free_port()
        env = {**os.environ, "JIFEN_TOPIC_PREFIX": self.prefix,
               "JIFEN_CONSUMER_GROUP": f"{self.prefix}jifen-{self.service}", "JIFEN_SCHEMA_NAME": self.schema,
               "JIFEN_HTTP_PORT": str(port), "JIFEN_DATABASE_URL": self.settings.database_url,
               "JIFEN_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap, **self.env}
        with _append(self.log_file) as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"services.{self.service}", stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, cwd=REPO, env=env, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await asyncio.to_thread(http_ok, f"http://127.0.0.1:{port}/health/ready"):
            self.check_alive("during start")
            if time.monotonic() > deadline:
                raise BenchError(f"the bench's {self.service} was not ready after {READY_TIMEOUT_S:.0f}s; see "
                                 f"{self.log_file}")
            await asyncio.sleep(0.3)

    def check_alive(self, when: str) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise BenchError(f"the bench's {self.service} exited {when} (code {self.proc.returncode}); last lines "
                             f"of {self.log_file}:\n{tail(self.log_file)}")

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            print(f"    (the bench's {self.service} did not stop in {STOP_TIMEOUT_S:.0f}s; killing pid {proc.pid})")
            proc.kill()
            await proc.wait()


class PrivateLedger(PrivateService):
    service = "ledger"


class PrivateTiers(PrivateService):
    service = "tiers"


class Profiler:
    """py-spy on the ledger while a phase is measured: collapsed stacks, which speedscope.app also opens."""

    def __init__(self, out_dir: Path, run_id: str) -> None:
        found = Path(sys.executable).parent / "py-spy"
        exe = str(found) if found.exists() else shutil.which("py-spy")
        if exe is None:
            raise BenchError("--profile needs py-spy (it is a dev dependency: uv sync, or pip install py-spy)")
        self.exe = exe
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.run_id = run_id
        self.proc: asyncio.subprocess.Process | None = None
        self.path: Path | None = None
        self.started = 0.0

    async def start(self, pid: int, phase: str) -> None:
        self.path = self.out_dir / f"ledger-{self.run_id}-{phase}.txt"
        self.proc = await asyncio.create_subprocess_exec(
            self.exe, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--nolineno", "--format", "raw",
            "--output", str(self.path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self.started = time.monotonic()

    async def stop(self) -> tuple[Path, float] | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        took = time.monotonic() - self.started
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            print("    (py-spy did not finish writing in 60s; no profile for this phase)")
            return None
        assert self.path is not None
        if not await asyncio.to_thread(self.path.exists):
            print(f"    (py-spy wrote no profile: {err.decode(errors='replace').strip()[-500:]})")
            return None
        return self.path, took


def hot_spots(path: Path, seconds: float, top: int = 15) -> list[str]:
    """The profile's busiest functions: by own time, by time including callees (our code only), by package."""
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for row in path.read_text().splitlines():
        stack, _, n = row.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        samples += int(n)
        own[frames[-1]] += int(n)
        packages[_package(frames[-1])] += int(n)
        for frame in set(frames):
            if _package(frame).startswith(("services", "shared")) and not frame.startswith("<module>"):
                within[frame] += int(n)
    if not samples:
        return ["    (no samples: was the ledger idle?)"]
    out = [f"    {samples:,} busy samples (all threads) in {seconds:.1f}s at 100/s ({samples / seconds:.0f}% busy); "
           f"file {path}", "    own time, by function:"]
    out += [f"      {n / samples:6.1%}  {frame}" for frame, n in own.most_common(top)]
    out.append("    own time, by package (services/* and shared/* by module):")
    out += [f"      {n / samples:6.1%}  {package}" for package, n in packages.most_common(10)]
    out.append("    time including callees, Jifen's own functions:")
    out += [f"      {n / samples:6.1%}  {frame}" for frame, n in within.most_common(top)]
    return out


def _package(frame: str) -> str:
    where = frame.rpartition("(")[2].rstrip(")")
    parts = where.split("/")
    if parts[0] in ("services", "shared") and len(parts) > 1:
        return ".".join(parts).removesuffix(".py")
    return parts[0] if len(parts) > 1 else where


# --- CPU use of the parts, from /proc --------------------------------------------------------------------

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
Snapshot = dict[str, dict[int, float]]  # part -> pid -> CPU seconds used so far


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds so far) of every process still there."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(")") + 2:].split()
        found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICK)
    return found


def parent_of(pid: int) -> int | None:
    """The parent of a process on this machine (a PostgreSQL backend's postmaster), None if there is none here."""
    return _processes().get(pid, (None, 0.0))[0]


def cpu_snapshot(roots: list[tuple[str, int | None]]) -> Snapshot:
    """CPU seconds so far of each part: its root process and that process's children not a root themselves (a
    postmaster's backends; py-spy under the bench), plus the busy time of the whole machine (all cores, less idle
    and iowait) as `machine`."""
    part_of = {root: part for part, root in roots if root is not None}
    snapshot: Snapshot = {part: {} for part in part_of.values()}
    for pid, (parent, cpu) in _processes().items():
        part = part_of.get(pid) or part_of.get(parent)
        if part is not None:
            snapshot[part][pid] = cpu
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    snapshot["machine"] = {0: (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLOCK_TICK}
    return snapshot


def cores_busy(first: Snapshot, last: Snapshot, seconds: float) -> dict[str, float]:
    """Cores each part kept busy between two snapshots, and `others`: whatever else ran on the machine.
    Processes that started in between count whole; those that ended in between are missed."""
    cores = {part: sum(cpu - first.get(part, {}).get(pid, 0.0) for pid, cpu in pids.items()) / seconds
             for part, pids in last.items()}
    cores["others"] = cores["machine"] - sum(v for part, v in cores.items() if part != "machine")
    return cores
