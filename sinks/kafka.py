"""The one way the project hands messages to a confluent-kafka producer.

librdkafka queues messages locally and raises ``BufferError`` when that queue is full; the answer
is always the same: serve delivery reports for a moment (``poll``), which drains the queue, and
try again from the message that did not fit. Every producer of the project (results, dead
letters, replay, the demo generator, the benchmarks) goes through :func:`produce` or
:func:`produce_many`, so that loop is written once.

It lives in sinks/ (the lowest floor that produces: the results topic) so that streams/ and
cutstream/ can both use it without an upward import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from sinks.errors import SinkError

#: Seconds to serve delivery reports when the local queue is full, before trying again.
FULL_QUEUE_WAIT_S = 0.05

DeliveryCallback = Callable[[Any, Any], None]


def produce(
    producer: Any,
    topic: str,
    value: bytes | None,
    key: bytes | str | None = None,
    *,
    wait_s: float = FULL_QUEUE_WAIT_S,
    **kwargs: Any,
) -> None:
    """Queue one message (``kwargs``: headers, timestamp, on_delivery, partition), waiting while
    the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(wait_s)


def produce_many(
    producer: Any,
    topic: str,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | str | None] | None = None,
    *,
    timestamps: Sequence[int] | None = None,
    on_delivery: DeliveryCallback | None = None,
    wait_s: float = FULL_QUEUE_WAIT_S,
) -> int:
    """Queue ``values`` in order (with ``keys`` and ``timestamps`` when given); returns how many.

    A plain loop over the producer's ``produce`` while the local queue has room; when it is full,
    the delivery reports are served for ``wait_s`` and the loop goes on from the message that did
    not fit, so nothing is skipped or sent twice.
    """
    n = len(values)
    send = producer.produce
    kw: dict[str, Any] = {} if on_delivery is None else {"on_delivery": on_delivery}
    start = 0
    while start < n:
        i = start
        try:
            if timestamps is not None:
                for i in range(start, n):
                    send(
                        topic, values[i], keys[i] if keys is not None else None, timestamp=timestamps[i], **kw
                    )
            elif keys is not None:
                for i in range(start, n):
                    send(topic, values[i], keys[i], **kw)
            else:
                for i in range(start, n):
                    send(topic, values[i], **kw)
        except BufferError:
            producer.poll(wait_s)
            start = i
            continue
        start = n
    return n


class DeliveryTracker:
    """A producer's delivery callback that counts failures, so that a flush can refuse to go on past them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failed = 0
        self.delivered = 0
        self.last_error: str | None = None

    def __call__(self, err: Any, _msg: Any) -> None:
        with self._lock:
            if err is not None:
                self.failed += 1
                self.last_error = str(err)
            else:
                self.delivered += 1

    def raise_if_failed(self, what: str) -> None:
        """Raise (and reset) when a delivery failed since the last call."""
        with self._lock:
            n, err = self.failed, self.last_error
            self.failed, self.last_error = 0, None
        if n:
            raise SinkError(
                f"{n} {what} deliveries failed (last error: {err}); "
                "not checkpointing past them: the input will be re-read after a restart"
            )
