"""Real Apache Kafka (KRaft, from Maven Central jars) and PostgreSQL (Debian's package) as local processes.

Used by `jifen stack` and by the test fixtures when no Docker engine answers. Every process we start
leaves a pid file in the run folder, so stopping touches exactly what we started.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shared.contracts.topics import all_topics
from shared.kafka import Cluster, client_options

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "deploy" / "local" / "kafka" / "pom.xml"
KAFKA_LIBS = REPO / ".cache" / "kafka" / "libs"


class StackError(RuntimeError):
    """A part of the local stack could not be brought up; the message says why and what to do."""


def log(message: str) -> None:
    print(f"  · {message}", flush=True)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid_file: Path) -> int | None:
    """The pid recorded in pid_file if that process still runs (and is not a zombie)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return None
    return None if state == "Z" else pid


def stop_pid(pid_file: Path, name: str, timeout: float = 20.0) -> None:
    pid = pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid_file):
        time.sleep(0.1)
    if pid_alive(pid_file):
        log(f"{name} did not stop in {timeout:.0f}s; killing it")
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid_file):
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    log(f"{name} stopped (pid {pid})")


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def spawn(cmd: list[str], log_file: Path, pid_file: Path, env: dict[str, str] | None = None,
          cwd: Path = REPO) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --- Kafka ------------------------------------------------------------------------------------------

@dataclass
class Kafka:
    run_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    # More of server.properties, after the defaults (a later key wins): another listener, TLS, SASL (the clusters
    # test adds a SASL_SSL one). `scram_users` are created when the storage is formatted, e.g.
    # "SCRAM-SHA-512=[name=jifen,password=...]".
    extra_config: str = ""
    scram_users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return self.run_dir / "kafka"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "pids" / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / "kafka.log"

    def fetch_jars(self) -> None:
        if any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
            return
        if shutil.which("mvn") is None:
            raise StackError("Maven (`mvn`) is needed to fetch the Kafka jars; install it (apt-get install maven)")
        log("fetching Apache Kafka jars from Maven Central (first run only)")
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={KAFKA_LIBS}", "-DincludeScope=runtime"],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"mvn could not fetch the Kafka jars:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _write_config(self) -> Path:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        props.write_text(f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=6
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=134217728
num.network.threads=2
num.io.threads=4
{self.extra_config}""")
        (self.home / "log4j.properties").write_text("""\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
""")
        if not (data / "meta.properties").exists():
            cluster_id = subprocess.run(
                self._java("kafka.tools.StorageTool", "random-uuid"), capture_output=True, text=True,
                check=True).stdout.strip()
            result = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                           *(arg for user in self.scram_users for arg in ("--add-scram", user))),
                capture_output=True, text=True)
            if result.returncode != 0:
                raise StackError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")
        return props

    def _java(self, *args: str) -> list[str]:
        return ["java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
                f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
                "-cp", f"{KAFKA_LIBS}/*", *args]

    def start(self, timeout: float = 90.0) -> None:
        if pid_alive(self.pid_file):
            log(f"Kafka already running (pid {pid_alive(self.pid_file)}) on {self.bootstrap}")
            return
        if port_open(self.port):
            raise StackError(f"port {self.port} is taken by a process this stack did not start; stop it or "
                             "point JIFEN_KAFKA_BOOTSTRAP at that broker")
        if shutil.which("java") is None:
            raise StackError("Java 17 is needed to run Kafka; install it (apt-get install openjdk-17-jre-headless)")
        self.fetch_jars()
        props = self._write_config()
        pid = spawn(self._java("kafka.Kafka", str(props)), self.log_file, self.pid_file)
        log(f"Kafka starting (pid {pid}), log {self.log_file}")
        deadline = time.monotonic() + timeout
        while not (port_open(self.port) and asyncio.run(kafka_ready(self.bootstrap))):
            if not pid_alive(self.pid_file):
                raise StackError(f"Kafka exited during start; last log lines:\n{tail(self.log_file)}")
            if time.monotonic() > deadline:
                raise StackError(f"Kafka not ready after {timeout:.0f}s; last log lines:\n{tail(self.log_file)}")
            time.sleep(0.5)
        log(f"Kafka ready on {self.bootstrap}")

    def stop(self) -> None:
        stop_pid(self.pid_file, "Kafka", timeout=30)


async def kafka_ready(bootstrap: Cluster | str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.describe_cluster()
        return True
    except Exception:  # any failure here just means "not yet"
        return False
    finally:
        await admin.close()


async def create_topics(bootstrap: Cluster | str, names: list[str], partitions: int, replicas: int = 1) -> list[str]:
    """Create the topics that do not exist yet and wait until they are seen; returns the names created. Topics the
    broker refuses (a replication factor above its brokers, say) raise StackError naming each with its reason; one
    made meanwhile by someone else is no refusal."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            response = await admin.create_topics([NewTopic(n, partitions, replicas) for n in missing])
            refused = [f"{name}: {for_code(code).__name__}" + (f": {detail[0]}" if detail and detail[0] else "")
                       for name, code, *detail in response.topic_errors
                       if code not in (0, TopicAlreadyExistsError.errno)]
            if refused:
                raise StackError(f"the broker refused {len(refused)} of {len(missing)} new topics: "
                                 + "; ".join(refused))
        deadline = time.monotonic() + 30
        while set(missing) - set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise StackError(f"topics not visible after creation: {missing}")
            await asyncio.sleep(0.2)
        return missing
    finally:
        await admin.close()


def ensure_topics(bootstrap: Cluster | str, prefix: str = "", partitions: int = 6) -> None:
    created = asyncio.run(create_topics(bootstrap, all_topics(prefix), partitions))
    count = len(all_topics(prefix))
    log(f"topics: {count} present ({len(created)} created, {partitions} partitions each)")


# --- PostgreSQL --------------------------------------------------------------------------------------

def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def install_postgres() -> Path:
    """Install Debian's postgresql package when the server binaries are missing."""
    bin_dir = postgres_bin()
    if bin_dir is not None:
        return bin_dir
    if os.geteuid() != 0:
        raise StackError("PostgreSQL is not installed and we are not root: run `sudo apt-get install -y "
                         "postgresql`, or set JIFEN_DATABASE_URL to an existing database")
    log("installing PostgreSQL from Debian's packages (first run only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise StackError("apt-get installed postgresql but no server binary was found under /usr/lib/postgresql")
    return bin_dir


@dataclass
class Postgres:
    run_dir: Path
    port: int = 5432
    user: str = "jifen"
    password: str = "jifen"
    database: str = "jifen"
    # More server options (`-c ssl=on -c ssl_cert_file=...`) and, when given, the whole pg_hba.conf (written
    # once, after initdb): the clusters test runs a server that takes TLS connections only.
    extra_options: str = ""
    hba: str | None = None

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "postgres" / "data"

    @property
    def socket_dir(self) -> Path:
        return self.run_dir / "postgres" / "socket"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / "postgres.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        # The server refuses to run as root; run it as the Debian `postgres` user then.
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def start(self, timeout: float = 60.0) -> None:
        if self.running_pid():
            log(f"PostgreSQL already running (pid {self.running_pid()}) on port {self.port}")
            return
        if port_open(self.port):
            raise StackError(f"port {self.port} is taken by a process this stack did not start; stop it or "
                             "set JIFEN_DATABASE_URL to use that server")
        bin_dir = install_postgres()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.data_dir.parent, self.socket_dir):
                shutil.chown(path, "postgres", "postgres")
            self.log_file.touch()
            shutil.chown(self.log_file, "postgres", "postgres")
        if not (self.data_dir / "PG_VERSION").exists():
            log(f"initialising a PostgreSQL cluster in {self.data_dir}")
            result = subprocess.run(self._as_postgres(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--locale=C.UTF-8"]), capture_output=True, text=True)
            if result.returncode != 0:
                raise StackError(f"initdb failed (is {self.run_dir} reachable by the postgres user?):\n"
                                 f"{result.stdout[-1500:]}{result.stderr[-1500:]}")
            if self.hba is not None:
                (self.data_dir / "pg_hba.conf").write_text(self.hba)
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.socket_dir} -c max_connections=200 "
                   "-c shared_buffers=256MB -c wal_buffers=16MB -c max_wal_size=2GB "
                   f"-c checkpoint_timeout=15min -c log_min_messages=warning {self.extra_options}")
        result = subprocess.run(self._as_postgres(
            [str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
             "-w", "-t", str(int(timeout)), "start"]), capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"PostgreSQL did not start:\n{result.stdout}{result.stderr}\n{tail(self.log_file)}")
        self._ensure_role_and_database(bin_dir)
        log(f"PostgreSQL ready on 127.0.0.1:{self.port} (pid {self.running_pid()}), log {self.log_file}")

    def _psql(self, bin_dir: Path, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(self._as_postgres(
            [str(bin_dir / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres",
             "-d", database, "-tAc", sql]), capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"psql failed: {sql}\n{result.stderr}")
        return result.stdout.strip()

    def _ensure_role_and_database(self, bin_dir: Path) -> None:
        if not self._psql(bin_dir, f"SELECT 1 FROM pg_roles WHERE rolname = '{self.user}'"):
            self._psql(bin_dir, f"CREATE ROLE {self.user} LOGIN SUPERUSER PASSWORD '{self.password}'")
        if not self._psql(bin_dir, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"):
            self._psql(bin_dir, f"CREATE DATABASE {self.database} OWNER {self.user}")

    def stop(self, mode: str = "fast") -> None:
        pid = self.running_pid()
        bin_dir = postgres_bin()
        if pid is None or bin_dir is None:
            return
        subprocess.run(self._as_postgres(
            [str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
            capture_output=True, text=True)
        log(f"PostgreSQL stopped (pid {pid})")

    def restart_process(self) -> None:
        """Stop immediately and start again (used by the outage tests)."""
        self.stop(mode="immediate")
        self.start()


# --- Prometheus --------------------------------------------------------------------------------------

PROMETHEUS_RULES = REPO / "deploy" / "prometheus" / "rules"


def install_prometheus() -> Path:
    """Debian's prometheus package (the server and promtool), installed when missing, as for PostgreSQL."""
    found = shutil.which("prometheus")
    if found is not None and shutil.which("promtool") is not None:
        return Path(found).parent
    if os.geteuid() != 0:
        raise StackError("Prometheus is not installed and we are not root: run `sudo apt-get install -y "
                         "prometheus`, or set JIFEN_PROMETHEUS=off to run the stack without it")
    log("installing Prometheus from Debian's packages (first run only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    # Debian's package would start a system Prometheus on 9090 where a service manager runs; the stack runs its own.
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    found = shutil.which("prometheus")
    if found is None:
        raise StackError("apt-get installed prometheus but no `prometheus` binary is on the PATH")
    return Path(found).parent


@dataclass
class Prometheus:
    """A Prometheus server scraping the stack's services, with Jifen's recording and alert rules."""

    run_dir: Path
    port: int = 9090

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()

    @property
    def home(self) -> Path:
        return self.run_dir / "prometheus"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "pids" / "prometheus.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, targets: dict[str, int]) -> str:
        """The scrape config: every service under job `jifen` (its metrics carry their own `service` label)."""
        rules = "\n".join(f"  - {path}" for path in sorted(PROMETHEUS_RULES.glob("*.yml")))
        services = "\n".join(
            f"      - targets: ['127.0.0.1:{port}']\n        labels: {{instance_name: {name}}}"
            for name, port in targets.items())
        return f"""\
# Written by `jifen stack up`; edit deploy/local/infra.py, not this file.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
{rules}
scrape_configs:
  - job_name: jifen
    honor_labels: true
    static_configs:
{services}
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{self.port}']
"""

    def start(self, targets: dict[str, int], timeout: float = 60.0) -> None:
        if pid_alive(self.pid_file):
            log(f"Prometheus already running (pid {pid_alive(self.pid_file)}) on {self.url}")
            return
        if port_open(self.port):
            raise StackError(f"port {self.port} is taken by a process this stack did not start; stop it or set "
                             "JIFEN_PROMETHEUS=off")
        bin_dir = install_prometheus()
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        config = self.home / "prometheus.yml"
        config.write_text(self.config(targets))
        pid = spawn([str(bin_dir / "prometheus"), f"--config.file={config}",
                     f"--storage.tsdb.path={self.home / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                     "--storage.tsdb.retention.time=7d", "--web.enable-lifecycle"], self.log_file, self.pid_file)
        deadline = time.monotonic() + timeout
        while not _http_ok(f"{self.url}/-/ready"):
            if not pid_alive(self.pid_file):
                raise StackError(f"Prometheus exited during start; last log lines:\n{tail(self.log_file)}")
            if time.monotonic() > deadline:
                raise StackError(f"Prometheus not ready after {timeout:.0f}s; see {self.log_file}")
            time.sleep(0.3)
        log(f"Prometheus ready (pid {pid}) on {self.url}, scraping {', '.join(targets)}")

    def stop(self) -> None:
        stop_pid(self.pid_file, "Prometheus")


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
