"""Prometheus metrics of a server run by ``serve()`` or ``python -m trio_asgi_ws`` (the ``metrics`` extra).

``serve(app, metrics_port=9100)`` (``--metrics-port 9100`` on the command line) answers
``GET /metrics`` on that port of the same host with the figures below, in Prometheus's text
format (OpenMetrics when the scraper asks for it).  With ``--workers N`` the supervising process
answers, with the sum over its workers (see ``_worker_metrics``).  docs/operations.md says what
each one means and what to alert on.

How it is cheap: nothing here runs per message.  The serving path counts into plain integers on
each connection (``_counters``); a scrape builds the figures from those totals
(``SnapshotCollector``), so a message costs a few integer additions with metrics on and an
attribute check with them off.  Importing ``trio_asgi_ws`` never imports this module or
``prometheus_client``.

Label values are bounded: ``reason`` and ``side`` take the values listed in ``METRICS``, ``code``
is a WebSocket close code (at most a few dozen values are ever seen).  There is no per-path or
per-client label.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, NamedTuple

import trio

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import Collector
except ModuleNotFoundError as missing:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "trio_asgi_ws.metrics needs prometheus-client: pip install 'trio_asgi_ws[metrics]'",
        name=missing.name,
    ) from None

from ._counters import Snapshot

__all__ = ["METRICS", "PREFIX", "MetricInfo", "SnapshotCollector", "exposition", "serve_metrics"]

logger = logging.getLogger("trio_asgi_ws")

PREFIX: Final = "trio_asgi_ws_"
"""The start of every exported metric's name."""


class MetricInfo(NamedTuple):
    """One exported metric: its full name, Prometheus type, help text and label names."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()


METRICS: Final[dict[str, MetricInfo]] = {
    info.name: info
    for info in (
        MetricInfo(PREFIX + "connections_open", "gauge", "WebSockets accepted and not yet closed."),
        MetricInfo(PREFIX + "connections_accepted_total", "counter", "WebSocket handshakes accepted."),
        MetricInfo(
            PREFIX + "connections_rejected_total",
            "counter",
            "WebSocket handshakes refused before accept, by reason: origin (the router's origin "
            "check), no_route (no route matched), denial (the app closed or answered HTTP before "
            "accepting), error (the handler failed before accepting: HTTP 500), shutdown (the "
            "server was stopping).",
            ("reason",),
        ),
        MetricInfo(PREFIX + "messages_received_total", "counter", "WebSocket messages from clients."),
        MetricInfo(PREFIX + "messages_sent_total", "counter", "WebSocket messages sent by the app."),
        MetricInfo(
            PREFIX + "received_bytes_total",
            "counter",
            "Payload bytes of the messages received (text as UTF-8; frame headers excluded).",
        ),
        MetricInfo(
            PREFIX + "sent_bytes_total",
            "counter",
            "Payload bytes of the messages sent (text as UTF-8; frame headers excluded).",
        ),
        MetricInfo(
            PREFIX + "closes_total",
            "counter",
            "Accepted WebSockets that ended, by close code and by the side that closed first "
            "(client or server); 1006 is a connection that ended without a close frame.",
            ("code", "side"),
        ),
        MetricInfo(
            PREFIX + "pump_takeovers_total",
            "counter",
            "Times a structured WebSocket's receive pump became the reader for its handler.",
        ),
        MetricInfo(
            PREFIX + "receive_buffer_overflows_total",
            "counter",
            "Structured WebSockets closed with 1008 because the client outran the receive buffer.",
        ),
        MetricInfo(
            PREFIX + "connections_dropped_total",
            "counter",
            "Connections the serving path dropped, by reason: oversize (a message over the size "
            "limit, 1009), protocol_error (a malformed frame, 1002/1007), send_timeout (a client "
            "that stopped reading), read_timeout (a client silent for read_timeout), shutdown "
            "(still open when the shutdown's grace ended).",
            ("reason",),
        ),
        # -- broadcast: every hub of the process (the app's), see Broadcast.stats() --
        MetricInfo(PREFIX + "broadcast_published_total", "counter", "Messages published on the hubs."),
        MetricInfo(
            PREFIX + "broadcast_received_total",
            "counter",
            "Messages the backend brought to the hubs for local subscribers (from Redis, or the "
            "process's own publishes on memory://).",
        ),
        MetricInfo(
            PREFIX + "broadcast_delivered_total", "counter", "Messages handed to subscribers and sockets."
        ),
        MetricInfo(
            PREFIX + "broadcast_dropped_total",
            "counter",
            "Messages lost to a full subscriber buffer, by overflow policy (drop_oldest, "
            "drop_newest, close: under close the subscriber is then ended, its socket closed 1013).",
            ("policy",),
        ),
        MetricInfo(
            PREFIX + "broadcast_replayed_total",
            "counter",
            "Messages given from the topic history to subscriptions that resumed (since=).",
        ),
        MetricInfo(
            PREFIX + "broadcast_lost_total",
            "counter",
            "Messages published while the backend (Redis) was unreachable, and so lost.",
        ),
        MetricInfo(PREFIX + "broadcast_subscriptions", "gauge", "Subscriptions open now."),
        MetricInfo(
            PREFIX + "broadcast_buffered_messages", "gauge", "Messages waiting in subscriber buffers now."
        ),
        MetricInfo(
            PREFIX + "broadcast_fullest_buffer_ratio",
            "gauge",
            "The fullest subscriber buffer now, as a fraction of its max_buffer: near 1, a "
            "subscriber is about to lose messages (or be closed, under the close policy).",
        ),
        MetricInfo(
            PREFIX + "broadcast_hubs",
            "gauge",
            "Open hubs by backend status (connected, reconnecting: Redis unreachable).",
            ("status",),
        ),
        MetricInfo(
            PREFIX + "broadcast_topic_published_total",
            "counter",
            "Messages published, per topic label (only topics the app labels: topic_label=).",
            ("topic",),
        ),
        MetricInfo(
            PREFIX + "broadcast_topic_delivered_total",
            "counter",
            "Messages delivered, per topic label (only topics the app labels).",
            ("topic",),
        ),
        MetricInfo(
            PREFIX + "broadcast_topic_dropped_total",
            "counter",
            "Messages dropped by overflow policies, per topic label (only topics the app labels).",
            ("topic",),
        ),
        MetricInfo(
            PREFIX + "broadcast_topic_subscriptions",
            "gauge",
            "Subscriptions open now, per topic label (only topics the app labels).",
            ("topic",),
        ),
    )
}
"""Every metric this module exports, by name."""

_BROADCAST: Final = {
    PREFIX + "broadcast_published_total": "published",
    PREFIX + "broadcast_received_total": "received",
    PREFIX + "broadcast_delivered_total": "delivered",
    PREFIX + "broadcast_replayed_total": "replayed",
    PREFIX + "broadcast_lost_total": "lost",
    PREFIX + "broadcast_subscriptions": "subscriptions",
    PREFIX + "broadcast_buffered_messages": "buffered",
    PREFIX + "broadcast_fullest_buffer_ratio": "fullest",
}
_BROADCAST_BY_TOPIC: Final = {
    PREFIX + "broadcast_topic_published_total": "published",
    PREFIX + "broadcast_topic_delivered_total": "delivered",
    PREFIX + "broadcast_topic_dropped_total": "dropped",
    PREFIX + "broadcast_topic_subscriptions": "subscriptions",
}

_SIMPLE: Final = {
    PREFIX + "connections_accepted_total": "accepted",
    PREFIX + "messages_received_total": "received_messages",
    PREFIX + "messages_sent_total": "sent_messages",
    PREFIX + "received_bytes_total": "received_bytes",
    PREFIX + "sent_bytes_total": "sent_bytes",
    PREFIX + "pump_takeovers_total": "pump_takeovers",
    PREFIX + "receive_buffer_overflows_total": "receive_overflows",
}


class SnapshotCollector(Collector):
    """A prometheus_client collector giving the figures of one ``Snapshot``."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """One metric family per entry of ``METRICS``, in its order, with the snapshot's figures
        (``prometheus_client`` calls this on every scrape; it reads the snapshot and never waits).
        """
        snapshot = self._snapshot
        broadcast = snapshot.get("broadcast", {})
        for name, info in METRICS.items():
            if name.startswith(PREFIX + "broadcast_"):
                yield _broadcast_metric(info, broadcast)
                continue
            if info.kind == "gauge":
                gauge = GaugeMetricFamily(name, info.help)
                gauge.add_metric([], snapshot["open"])
                yield gauge
                continue
            counter = CounterMetricFamily(name, info.help, labels=info.labels)
            if name in _SIMPLE:
                counter.add_metric([], snapshot[_SIMPLE[name]])
            elif name == PREFIX + "closes_total":
                for label, value in sorted(snapshot["closes"].items()):
                    code, side = label.split(" ")
                    counter.add_metric([code, side], value)
            else:
                key = "rejected" if name == PREFIX + "connections_rejected_total" else "drops"
                for reason, value in sorted(snapshot[key].items()):
                    counter.add_metric([reason], value)
            yield counter


def _broadcast_metric(info: MetricInfo, figures: dict[str, Any]) -> Metric:
    """One broadcast metric from the process's (or processes') broadcast figures."""
    family = GaugeMetricFamily if info.kind == "gauge" else CounterMetricFamily
    metric = family(info.name, info.help, labels=info.labels)
    if info.name in _BROADCAST:
        metric.add_metric([], figures.get(_BROADCAST[info.name], 0))
    elif info.name in _BROADCAST_BY_TOPIC:
        field = _BROADCAST_BY_TOPIC[info.name]
        for label, topic in sorted(figures.get("topics", {}).items()):
            metric.add_metric([label], topic.get(field, 0))
    else:  # dropped by policy, hubs by status
        key = "dropped" if info.name == PREFIX + "broadcast_dropped_total" else "hubs"
        for label, value in sorted(figures.get(key, {}).items()):
            metric.add_metric([label], value)
    return metric


def exposition(snapshot: Snapshot, accept: str = "") -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` answer for ``snapshot``.

    ``accept`` is the request's ``Accept`` header: OpenMetrics when it asks for it, else
    Prometheus's text format.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


_MAX_REQUEST_HEAD = 16 * 1024
_REQUEST_TIMEOUT = 10.0


async def serve_metrics(
    source: Callable[[], Awaitable[Snapshot]],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``GET /metrics`` on ``host:port`` with ``await source()``'s figures, until cancelled.

    A small HTTP/1.0-style responder (one request per connection, then close), run in this
    task's nursery: no thread.  ``task_status.started`` reports the bound port (useful with
    ``port=0``).  Any other path gets 404, another method 405; a client that sends no complete
    request head within 10 s, or more than 16 KiB of it, is dropped.  A failing connection is
    logged at DEBUG and never stops the responder; cancelling it closes the listening socket and
    every connection being answered.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    logger.info("Metrics on http://%s:%d/metrics", shown, bound)
    task_status.started(bound)

    async def answer(stream: trio.SocketStream) -> None:
        try:
            async with stream:
                with trio.move_on_after(_REQUEST_TIMEOUT):
                    head = await _read_head(stream)
                    if head is not None:
                        await stream.send_all(await _response(head, source))
        except Exception as error:  # one scraper's failure is never the server's
            logger.debug("metrics request failed: %r", error)

    await trio.serve_listeners(answer, listeners)


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        if len(head) > _MAX_REQUEST_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        head += chunk
    return head


async def _response(head: bytes, source: Callable[[], Awaitable[Snapshot]]) -> bytes:
    lines = head.decode("latin-1").splitlines()
    method, _, rest = lines[0].partition(" ")
    target = rest.partition(" ")[0].partition("?")[0]
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    if target != "/metrics":
        return _http(404, b"Not Found\n", "text/plain; charset=utf-8")
    if method not in ("GET", "HEAD"):
        return _http(405, b"Method Not Allowed\n", "text/plain; charset=utf-8")
    body, content_type = exposition(await source(), accept)
    return _http(200, b"" if method == "HEAD" else body, content_type, length=len(body))


_REASONS: Final = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}


def _http(status: int, body: bytes, content_type: str, *, length: int | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
