"""``trio_asgi_ws.metrics``: the exposition of a snapshot, sums of workers, the optional import,
and the Grafana dashboard's metric names.  (Each metric moved by a real server:
tests/integration/test_metrics.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from trio_asgi_ws._counters import empty_snapshot, merge
from trio_asgi_ws.metrics import METRICS, PREFIX, exposition

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboards" / "grafana-trio_asgi_ws.json"
BROADCAST_METRICS = {  # the dashboard's broadcast panels
    PREFIX + "broadcast_delivered_total",
    PREFIX + "broadcast_dropped_total",
    PREFIX + "broadcast_fullest_buffer_ratio",
}


def test_importing_the_package_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, trio_asgi_ws, trio_asgi_ws.server, trio_asgi_ws.routing, trio_asgi_ws.testing, "
        "trio_asgi_ws.__main__; "
        "assert 'prometheus_client' not in sys.modules, 'imported'; "
        "assert 'trio_asgi_ws.metrics' not in sys.modules, 'metrics imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_metric_names_follow_prometheus_conventions() -> None:
    for name, info in METRICS.items():
        assert name.startswith(PREFIX)
        assert re.fullmatch(r"[a-z_]+", name)
        assert name.endswith("_total") == (info.kind == "counter"), name
        assert "_bytes" not in name or name.endswith("_bytes_total"), name


def test_a_snapshot_is_exposed_with_every_figure_and_label() -> None:
    snapshot = empty_snapshot()
    snapshot.update(
        open=3,
        accepted=10,
        received_messages=40,
        received_bytes=400,
        sent_messages=41,
        sent_bytes=410,
        pump_takeovers=2,
        receive_overflows=1,
        rejected={"origin": 4, "no_route": 1},
        closes={"1000 client": 6, "1008 server": 1},
        drops={"send_timeout": 2},
        broadcast={
            "published": 7,
            "received": 9,
            "delivered": 30,
            "replayed": 5,
            "lost": 1,
            "dropped": {"drop_oldest": 2, "close": 1},
            "subscriptions": 4,
            "buffered": 6,
            "fullest": 0.5,
            "hubs": {"connected": 1, "reconnecting": 1},
            "topics": {"chat": {"published": 3, "delivered": 12, "dropped": 0, "subscriptions": 2}},
        },
    )
    body, content_type = exposition(snapshot)
    assert content_type.startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert samples == {
        (PREFIX + "connections_open", ()): 3,
        (PREFIX + "connections_accepted_total", ()): 10,
        (PREFIX + "connections_rejected_total", (("reason", "no_route"),)): 1,
        (PREFIX + "connections_rejected_total", (("reason", "origin"),)): 4,
        (PREFIX + "messages_received_total", ()): 40,
        (PREFIX + "messages_sent_total", ()): 41,
        (PREFIX + "received_bytes_total", ()): 400,
        (PREFIX + "sent_bytes_total", ()): 410,
        (PREFIX + "closes_total", (("code", "1000"), ("side", "client"))): 6,
        (PREFIX + "closes_total", (("code", "1008"), ("side", "server"))): 1,
        (PREFIX + "pump_takeovers_total", ()): 2,
        (PREFIX + "receive_buffer_overflows_total", ()): 1,
        (PREFIX + "connections_dropped_total", (("reason", "send_timeout"),)): 2,
        (PREFIX + "broadcast_published_total", ()): 7,
        (PREFIX + "broadcast_received_total", ()): 9,
        (PREFIX + "broadcast_delivered_total", ()): 30,
        (PREFIX + "broadcast_dropped_total", (("policy", "close"),)): 1,
        (PREFIX + "broadcast_dropped_total", (("policy", "drop_oldest"),)): 2,
        (PREFIX + "broadcast_replayed_total", ()): 5,
        (PREFIX + "broadcast_lost_total", ()): 1,
        (PREFIX + "broadcast_subscriptions", ()): 4,
        (PREFIX + "broadcast_buffered_messages", ()): 6,
        (PREFIX + "broadcast_fullest_buffer_ratio", ()): 0.5,
        (PREFIX + "broadcast_hubs", (("status", "connected"),)): 1,
        (PREFIX + "broadcast_hubs", (("status", "reconnecting"),)): 1,
        (PREFIX + "broadcast_topic_published_total", (("topic", "chat"),)): 3,
        (PREFIX + "broadcast_topic_delivered_total", (("topic", "chat"),)): 12,
        (PREFIX + "broadcast_topic_dropped_total", (("topic", "chat"),)): 0,
        (PREFIX + "broadcast_topic_subscriptions", (("topic", "chat"),)): 2,
    }


def test_openmetrics_is_given_to_a_scraper_that_asks_for_it() -> None:
    body, content_type = exposition(empty_snapshot(), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_workers_snapshots_add_up_and_retired_ones_keep_counters_not_the_open_gauge() -> None:
    one, two = empty_snapshot(), empty_snapshot()
    one.update(open=2, accepted=5, sent_bytes=7, closes={"1000 client": 3}, drops={"oversize": 1})
    two.update(open=1, accepted=4, sent_bytes=1, closes={"1000 client": 1, "1006 client": 2})
    total = merge([one, two])
    assert (total["open"], total["accepted"], total["sent_bytes"]) == (3, 9, 8)
    assert total["closes"] == {"1000 client": 4, "1006 client": 2}
    assert total["drops"] == {"oversize": 1}
    retired = merge([one], gauges=False)
    assert (retired["open"], retired["accepted"]) == (0, 5)


def test_the_grafana_dashboard_uses_only_exported_metric_names() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    used = {name for expr in expressions for name in re.findall(r"\b" + PREFIX + r"[a-z_]+", expr)}
    assert used <= set(METRICS), used - set(METRICS)
    assert used >= BROADCAST_METRICS
    for title in ("Open WebSockets", "Messages per second", "Closes per second by code and side"):
        assert title in {panel["title"] for panel in dashboard["panels"]}


async def test_the_supervisor_sums_live_workers_and_keeps_an_exited_workers_counters() -> None:
    import socket

    import trio

    from trio_asgi_ws._counters import ConnectionTally, Counters
    from trio_asgi_ws._worker_metrics import Aggregate, WorkerLink, answer_snapshots

    aggregate = Aggregate()
    workers = [Counters(), Counters()]
    for index, counters in enumerate(workers):  # worker i: i + 1 accepted, one still open
        for _ in range(index + 1):
            tally = ConnectionTally({"path": "/", "client": ("127.0.0.1", 1)})
            counters.opened(tally)
            tally.received_messages += 2
        counters.ended(tally, 1000, "client", None)
    async with trio.open_nursery() as nursery:
        links = []
        for counters in workers:
            ours, theirs = socket.socketpair()
            link = WorkerLink(ours)
            aggregate.links.add(link)
            links.append(link)
            nursery.start_soon(answer_snapshots, theirs, counters)
        both = await aggregate.snapshot()
        assert (both["accepted"], both["open"], both["received_messages"]) == (3, 1, 6)
        assert both["closes"] == {"1000 client": 2}
        await aggregate.retire(links[1])  # worker 2 exits: its counters stay, its open gauge goes
        after = await aggregate.snapshot()
        assert (after["accepted"], after["open"], after["received_messages"]) == (3, 0, 6)
        assert after["closes"] == {"1000 client": 2}
        await aggregate.retire(links[0])
        assert (await aggregate.snapshot())["accepted"] == 3  # counters never go down
        nursery.cancel_scope.cancel()
