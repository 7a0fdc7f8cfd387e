"""A TCP proxy on 127.0.0.1 that can partition the network to one server.

``TcpProxy(target_port)`` listens on its own port and forwards every connection
to the target. ``cut("blackhole")`` is a silent partition: bytes stop moving in
both directions on existing connections and new connections are accepted but
never answered (no reset, no error: clients wait for their own timeouts).
``cut("reject")`` resets every connection and closes the listening socket, so new
connects are refused at once. ``heal()`` undoes either; after a blackhole, held
connections resume where they stopped, as TCP does when a partition heals.

All sockets live in one thread running a selector loop, so the proxy works the
same for synchronous tests, asyncio tests and controllers in subprocesses.
Control calls are executed by that thread and return only once they took effect.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

HOST = "127.0.0.1"
CHUNK = 65536
# Stop reading from one side while this much is waiting to be written to the other.
MAX_BUFFER = 1 << 20

CutMode = Literal["blackhole", "reject"]


@dataclass(eq=False)
class _Side:
    sock: socket.socket
    out: bytearray = field(default_factory=bytearray)  # bytes waiting to be sent to sock
    peer: _Side | None = None
    connecting: bool = False


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0 makes close() send RST: the peer learns at once, as with a
    # refused or reset connection.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forward ``HOST:port`` to ``target_host:target_port``; cut and heal on demand."""

    def __init__(self, target_port: int, target_host: str = HOST, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._want_port = port
        self.port = 0
        self.mode: CutMode | None = None
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._sides: set[_Side] = set()
        self._held: list[socket.socket] = []  # accepted during a blackhole, not yet forwarded
        self._calls: queue.Queue[tuple[Callable[[], None], threading.Event, list[BaseException]]]
        self._calls = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopping = False

    # -- public API ------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq DSN reaching the target through this proxy."""
        return self.dsn_for()

    def dsn_for(self, user: str = "postgres", dbname: str = "postgres") -> str:
        """libpq DSN through this proxy with ``user`` and ``dbname``."""
        return f"host={HOST} port={self.port} user={user} dbname={dbname}"

    def start(self) -> TcpProxy:
        """Bind and start forwarding; returns self."""
        if self._running:
            return self
        self._listen(self._want_port)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"tcp-proxy-{self.port}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every socket and end the thread."""
        if not self._running:
            return
        try:
            self._call(self._shutdown)
        finally:
            if self._thread is not None:
                self._thread.join(5)
            self._running = False
            with contextlib.suppress(OSError):
                self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def cut(self, mode: CutMode = "blackhole") -> None:
        """Partition the target off: ``blackhole`` (silent) or ``reject`` (reset/refuse)."""
        if mode not in ("blackhole", "reject"):
            raise ValueError(f"unknown cut mode {mode!r}; use 'blackhole' or 'reject'")
        self._call(lambda: self._cut(mode))

    def heal(self) -> None:
        """End the partition: forward again, including connections held meanwhile."""
        self._call(self._heal)

    @property
    def connections(self) -> int:
        """Client connections currently open through the proxy (held ones included)."""
        return sum(1 for s in self._sides if s.peer is not None) // 2 + len(self._held)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- control, run on the loop thread ---------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        if not self._running:
            raise RuntimeError("the proxy is not running")
        done = threading.Event()
        errors: list[BaseException] = []
        self._calls.put((fn, done, errors))
        self._wake_w.send(b"x")
        if not done.wait(5):
            raise TimeoutError("the proxy thread did not answer")
        if errors:
            raise errors[0]

    def _listen(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        self._listener = sock

    def _cut(self, mode: CutMode) -> None:
        if mode == "reject":
            for side in list(self._sides):
                self._drop(side, reset=True)
            for held in self._held:
                _reset(held)
            self._held.clear()
            if self._listener is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(self._listener)
                self._listener.close()
                self._listener = None
        self.mode = mode
        self._refresh_all()

    def _heal(self) -> None:
        self.mode = None
        if self._listener is None:
            self._listen(self.port)
            self._sel.register(self._listener, selectors.EVENT_READ, "accept")  # type: ignore[arg-type]
        held, self._held = self._held, []
        for client in held:
            self._forward(client)
        self._refresh_all()

    def _shutdown(self) -> None:
        for side in list(self._sides):
            self._drop(side, reset=False)
        for held in self._held:
            _reset(held)
        self._held.clear()
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
        self._stopping = True

    # -- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        self._stopping = False
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        assert self._listener is not None
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        try:
            while not self._stopping:
                for key, events in self._sel.select(timeout=1.0):
                    if key.data == "wake":
                        self._run_calls()
                    elif key.data == "accept":
                        self._accept()
                    elif isinstance(key.data, _Side):
                        self._io(key.data, events)
        finally:
            # Whatever happened, no socket outlives the loop.
            for side in list(self._sides):
                self._drop(side, reset=False)
            for held in self._held:
                _reset(held)
            self._held.clear()
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while True:
            try:
                fn, done, errors = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except BaseException as exc:  # handed to the caller's thread
                errors.append(exc)
            finally:
                done.set()

    def _accept(self) -> None:
        if self._listener is None:
            return
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            client.setblocking(False)
            if self.mode == "blackhole":
                self._held.append(client)  # never answered until heal()
            else:
                self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        err = upstream.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS):
            upstream.close()
            _reset(client)
            return
        a = _Side(client)
        b = _Side(upstream, connecting=err != 0)
        a.peer, b.peer = b, a
        self._sides.update((a, b))
        self._refresh(a)
        self._refresh(b)

    def _io(self, side: _Side, events: int) -> None:
        peer = side.peer
        if peer is None:
            return
        if side.connecting and events & selectors.EVENT_WRITE:
            err = side.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._drop(side, reset=True)
                return
            side.connecting = False
            self._refresh(peer)
        if self.mode is not None:
            self._refresh(side)
            return
        if events & selectors.EVENT_READ and not peer.connecting:
            try:
                data = side.sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(side, reset=True)
                return
            if data == b"":
                self._flush(peer)
                self._drop(side, reset=False)
                return
            if data:
                peer.out += data
                self._flush(peer)
        if events & selectors.EVENT_WRITE and side.out:
            self._flush(side)
        if side in self._sides:
            self._refresh(side)
        if peer in self._sides:
            self._refresh(peer)

    def _flush(self, side: _Side) -> None:
        if not side.out or side.connecting or self.mode is not None:
            return
        try:
            sent = side.sock.send(side.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(side, reset=True)
            return
        del side.out[:sent]

    def _refresh(self, side: _Side) -> None:
        if side not in self._sides:
            return
        mask = 0
        if side.connecting:
            mask = selectors.EVENT_WRITE
        elif self.mode is None:
            peer = side.peer
            if peer is not None and not peer.connecting and len(peer.out) < MAX_BUFFER:
                mask |= selectors.EVENT_READ
            if side.out:
                mask |= selectors.EVENT_WRITE
        try:
            if mask:
                self._sel.modify(side.sock, mask, side)
            else:
                # Unregistered: nothing is read or written while cut.
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(side.sock)
        except KeyError:
            if mask:
                self._sel.register(side.sock, mask, side)

    def _refresh_all(self) -> None:
        for side in list(self._sides):
            self._refresh(side)

    def _drop(self, side: _Side, reset: bool) -> None:
        for s in (side, side.peer):
            if s is None or s not in self._sides:
                continue
            self._sides.discard(s)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s.sock)
            if reset:
                _reset(s.sock)
            else:
                with contextlib.suppress(OSError):
                    s.sock.close()
            s.peer = None
