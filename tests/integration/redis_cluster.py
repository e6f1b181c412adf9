"""A real three-master Redis Cluster for one test, on free loopback ports, with stoppable nodes.

``async with RedisCluster() as cluster`` starts three ``redis-server`` processes in cluster mode
(no replicas, no persistence), joins them with ``redis-cli --cluster create`` and returns once
every node reports ``cluster_state:ok`` and all three describe the same slot layout.
``cluster.stop_node(port)`` kills one master with SIGKILL; ``cluster.start_node(port)`` starts it
again from its ``nodes-<port>.conf``, so it comes back as the same master owning the same slots.
The cluster runs with ``cluster-require-full-coverage no``: while a master is down the other two
keep serving their slots, which is what a backend's fault handling is tested against.

Readiness is polled over raw RESP on loopback (a one-line ``CLUSTER INFO`` / ``CLUSTER NODES``),
not through a Redis client, so the fixture depends on nothing but Redis itself.  Start-up takes about
two seconds, nearly all of it inside ``redis-cli --cluster create`` (which waits in one-second
steps for the nodes to meet); a restart takes about two seconds too, because a restarted master
holds back from ``cluster_state:ok`` for Redis's fixed two-second "writable delay".
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import pytest
import trio

SLOTS = 16384
"""Number of hash slots in a Redis Cluster."""

_MASTERS = 3
_NODE_TIMEOUT_MS = 1000
"""``cluster-node-timeout``: how long a silent node goes before the others flag it failing.

500 works as well and saves under a tenth of a second per restart; 1000 leaves room for a loaded
CI machine, where a shorter timeout could flag a merely slow node and make the settle check flap.
"""
_SETTLE_TIMEOUT = 20.0
"""Upper bound on waiting for the cluster to (re)settle; it stops hangs, it does not measure speed."""


def _free_cluster_port() -> int:
    """A loopback port that is free, and whose cluster bus port (port + 10000) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0): the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(name: str | bytes) -> int:
    """The hash slot of a key or shard channel, as ``CLUSTER KEYSLOT`` computes it.

    If the name holds a ``{`` followed later by a ``}`` with at least one character between them,
    only the text between the first such pair (the hash tag) is hashed, so ``x{room}`` and
    ``x{room}~h`` land in the same slot.
    """
    data = name.encode() if isinstance(name, str) else name
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % SLOTS


class _ReplyError(Exception):
    """Redis answered a command with an error reply (``-ERR ...``)."""


async def _command(port: int, *args: str) -> str:
    """Send one command to the node on ``port`` and return its string reply.

    Only the reply shapes the fixture asks for are understood: simple strings (``+OK``) and bulk
    strings (``CLUSTER INFO``, ``CLUSTER NODES``).  An error reply raises ``_ReplyError``; a node
    that is not listening raises ``OSError``.
    """
    request = f"*{len(args)}\r\n" + "".join(f"${len(arg.encode())}\r\n{arg}\r\n" for arg in args)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request.encode())
        buffer = b""
        while True:
            header, separator, rest = buffer.partition(b"\r\n")
            if separator:
                kind, value = header[:1], header[1:]
                if kind == b"+":
                    return value.decode()
                if kind == b"-":
                    raise _ReplyError(value.decode())
                if kind == b"$":
                    length = int(value)
                    if len(rest) >= length + 2:
                        return rest[:length].decode()
                else:
                    raise _ReplyError(f"unexpected reply {buffer!r}")
            data = await stream.receive_some()
            if not data:
                raise ConnectionResetError(f"redis on port {port} closed the connection")
            buffer += data


def _slot_layout(cluster_nodes: str) -> dict[int, tuple[tuple[int, int], ...]] | None:
    """Port -> owned slot ranges, from one node's ``CLUSTER NODES``; None if that node is unsettled.

    A node's view counts as settled when it knows exactly the cluster's masters, none of them is
    flagged ``fail``/``fail?``/``handshake``/``noaddr``, and every link is ``connected``.
    """
    layout: dict[int, tuple[tuple[int, int], ...]] = {}
    for line in cluster_nodes.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        # <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...
        address, flags, link = fields[1], fields[2].split(","), fields[7]
        if link != "connected" or {"fail", "fail?", "handshake", "noaddr"} & set(flags):
            return None
        port = int(address.split("@", 1)[0].rsplit(":", 1)[1])
        ranges: list[tuple[int, int]] = []
        for slots in fields[8:]:
            if slots.startswith("["):  # a slot being migrated or imported: not owned yet
                continue
            first, _, last = slots.partition("-")
            ranges.append((int(first), int(last or first)))
        layout[port] = tuple(sorted(ranges))
    return layout


class RedisCluster:
    """``async with RedisCluster() as cluster``: three masters, no replicas, on loopback.

    ``cluster.url`` is ``redis+cluster://127.0.0.1:<first port>``; ``cluster.ports`` lists the
    three masters' client ports; ``cluster.node_for_channel(name)`` is the port of the master whose
    slots hold that key or shard channel; ``await cluster.stop_node(port)`` kills that master and
    ``await cluster.start_node(port)`` restarts it and waits for the cluster to settle again.
    Leaving the block kills every node and removes their directories, whatever ended it.
    """

    def __init__(self) -> None:
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            missing = " and ".join(
                name for name, path in (("redis-server", server), ("redis-cli", cli)) if not path
            )
            pytest.fail(f"{missing} not installed (.ci/run installs the redis-server package with apt-get)")
        self._server = server
        self._cli = cli
        ports: list[int] = []
        while len(ports) < _MASTERS:
            port = _free_cluster_port()
            if port not in ports:
                ports.append(port)
        self.ports: tuple[int, ...] = tuple(ports)
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"
        self._root: Path | None = None
        self._processes: dict[int, trio.Process] = {}
        self._layout: dict[int, tuple[tuple[int, int], ...]] = {}

    def node_for_channel(self, name: str | bytes) -> int:
        """The port of the master that owns ``name``'s hash slot (hash tags honoured)."""
        slot = key_slot(name)
        for port, ranges in self._layout.items():
            if any(first <= slot <= last for first, last in ranges):
                return port
        raise LookupError(f"no master owns slot {slot} of {name!r}")

    def _directory(self, port: int) -> Path:
        assert self._root is not None, "the cluster is not running"
        return self._root / f"node-{port}"

    async def _launch(self, port: int) -> None:
        """Start the node on ``port`` from its directory and wait until it answers PING."""
        directory = self._directory(port)
        command = [
            self._server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
            "--cluster-node-timeout", str(_NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage", "no",
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(command, stdout=subprocess.DEVNULL, cwd=directory)
        self._processes[port] = process
        with trio.move_on_after(_SETTLE_TIMEOUT):
            while process.poll() is None:
                try:
                    if await _command(port, "PING") == "PONG":
                        return
                except (OSError, _ReplyError):
                    pass
                await trio.sleep(0.01)
        pytest.fail(
            f"redis-server on port {port} did not start (exit status {process.poll()}){self._log(port)}"
        )

    def _log(self, port: int) -> str:
        """The end of a node's log, to put in a failure message."""
        try:
            lines = (self._directory(port) / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"\n--- redis.log of port {port} (last lines) ---\n" + "\n".join(lines[-15:])

    async def _settled_layout(self) -> dict[int, tuple[tuple[int, int], ...]] | None:
        """The slot layout if every node is ``cluster_state:ok`` and all agree on it, else None."""
        layouts = []
        for port in self.ports:
            try:
                info = await _command(port, "CLUSTER", "INFO")
                nodes = await _command(port, "CLUSTER", "NODES")
            except (OSError, _ReplyError):
                return None
            if "cluster_state:ok" not in info.splitlines():
                return None
            layout = _slot_layout(nodes)
            if layout is None or set(layout) != set(self.ports):
                return None
            layouts.append(layout)
        first = layouts[0]
        if any(layout != first for layout in layouts):
            return None
        if sum(last - start + 1 for ranges in first.values() for start, last in ranges) != SLOTS:
            return None
        return first

    async def _wait_until_settled(self) -> None:
        """Poll until ``_settled_layout`` holds, bounded; fail the test with each node's state if not."""
        try:
            with trio.fail_after(_SETTLE_TIMEOUT):
                while True:
                    layout = await self._settled_layout()
                    if layout is not None:
                        break
                    await trio.sleep(0.02)
        except trio.TooSlowError:
            states = []
            for port in self.ports:
                try:
                    states.append(f"port {port}:\n{await _command(port, 'CLUSTER', 'NODES')}")
                except (OSError, _ReplyError) as exc:
                    states.append(f"port {port}: {exc!r}")
            pytest.fail(f"Redis Cluster did not settle within {_SETTLE_TIMEOUT}s:\n" + "\n".join(states))
        self._layout = layout

    async def stop_node(self, port: int) -> None:
        """Kill the master on ``port`` with SIGKILL and reap it; the other two keep serving."""
        process = self._processes.pop(port)
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()

    async def start_node(self, port: int) -> None:
        """Restart a stopped master from its ``nodes-<port>.conf`` and wait for the cluster to settle.

        The node rejoins with its old node id and slots; the others clear their failure flag for it
        once they hear from it again.
        """
        if port in self._processes:
            raise RuntimeError(f"the node on port {port} is already running")
        await self._launch(port)
        await self._wait_until_settled()

    async def _create(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        for port in self.ports:
            self._directory(port).mkdir()
        for port in self.ports:  # one at a time: each takes a few milliseconds to answer PING
            await self._launch(port)
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        command = [self._cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            pytest.fail(f"redis-cli --cluster create failed (exit status {result.returncode}):\n{output}")
        await self._wait_until_settled()

    async def _destroy(self) -> None:
        """Kill every node still running and remove the cluster's directories."""
        with trio.CancelScope(shield=True):
            processes, self._processes = self._processes, {}
            for process in processes.values():
                process.kill()
            for process in processes.values():
                await process.wait()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    async def __aenter__(self) -> RedisCluster:
        try:
            await self._create()
        except BaseException:
            await self._destroy()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._destroy()
