"""The systemd notify protocol over ``$NOTIFY_SOCKET``, without libsystemd.

A service of ``Type=notify`` tells systemd it is ready, what it is doing, and
that it is still alive, by sending newline-separated ``KEY=VALUE`` datagrams
to the ``AF_UNIX``/``SOCK_DGRAM`` socket named in ``$NOTIFY_SOCKET`` (a path,
or ``@name`` for an abstract socket). Outside systemd the variable is unset
and every call here is a no-op, so the controller calls them unconditionally.

How the controller uses it (one :class:`Notifier` per process)::

    notifier = Notifier.from_env()
    ...
    def on_round(result):                 # Controller.run(stop, on_round=...)
        notifier.round_completed(summary_line(result))
    ...
    with notifier.action_budget(seconds): # around an action that may be slow
        await controller.execute(action)
    ...
    notifier.reloading(); reload(); notifier.ready()     # on SIGHUP
    notifier.stopping()                                  # on SIGTERM

The watchdog is fed only by :meth:`Notifier.round_completed` /
:meth:`Notifier.watchdog`, called by the loop after each completed round, never
by a timer of its own: if the loop stalls, the pings stop and systemd restarts
the service after ``WatchdogSec``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import structlog

from hacontrol.redact import redact_text

log = structlog.get_logger("hacontrol.sdnotify")

# A STATUS= line longer than this is cut: systemctl shows one line anyway.
MAX_STATUS_CHARS = 200


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _socket_address(value: str) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` as a ``sendto`` address: a path, or ``@name`` → abstract."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # systemd also allows vsock:... addresses (VMs); not supported here.
    return None


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    """``WATCHDOG_USEC`` if set, valid, and meant for this process (``WATCHDOG_PID``)."""
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec


def _one_line(text: str) -> str:
    line = " ".join(redact_text(text).split())
    return line if len(line) <= MAX_STATUS_CHARS else line[: MAX_STATUS_CHARS - 1] + "…"


class Notifier:
    """Sends notifications to systemd; every method is a no-op when not under systemd.

    Sending never blocks and never raises: a full or vanished socket drops the
    message (logged once), since losing a STATUS= line must not stop the loop.
    Methods return whether a datagram was actually sent.
    """

    def __init__(
        self,
        address: str | bytes | None,
        watchdog_usec: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._clock = clock
        self._sock: socket.socket | None = None
        self._ready = False
        # Between RELOADING=1 and the reload's READY=1: rounds go on meanwhile, and
        # must not end the reload early with a READY=1 of their own.
        self._reloading = False
        self._last_status: str | None = None
        self._last_ping: float | None = None
        self._warned = False

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC`` (default: ``os.environ``)."""
        environ = os.environ if env is None else env
        address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        usec = _watchdog_usec(environ, os.getpid() if pid is None else pid)
        return cls(address, usec if address is not None else None, clock=clock)

    @property
    def enabled(self) -> bool:
        """Whether there is a systemd socket to talk to."""
        return self._address is not None

    @property
    def is_ready(self) -> bool:
        """Whether READY=1 has been sent (and not followed by RELOADING=1)."""
        return self._ready

    def watchdog_interval(self) -> float | None:
        """Seconds systemd waits for a ping before it kills the service; None: no watchdog."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1_000_000

    # -- messages

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines (keys upper-case, as systemd wants)."""
        if self._address is None:
            return False
        payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(
                payload.encode(), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, self._address
            )
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify_failed", error=exc.strerror or type(exc).__name__)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: start-up (or a reload) is complete. Also pings the watchdog."""
        fields: dict[str, str | int] = {"READY": 1}
        if status is not None:
            fields["STATUS"] = self._last_status = _one_line(status)
        if self._watchdog_usec is not None:
            fields["WATCHDOG"] = 1
        sent = self.notify(**fields)
        self._ready = True
        self._reloading = False
        if sent and self._watchdog_usec is not None:
            self._last_ping = self._clock()
        return sent

    def status(self, text: str) -> bool:
        """STATUS=<one line>, shown by ``systemctl status`` (secrets scrubbed)."""
        self._last_status = _one_line(text)
        return self.notify(STATUS=self._last_status)

    def watchdog(self) -> bool:
        """WATCHDOG=1 now. Call it from the loop, never from a timer."""
        if self._watchdog_usec is None:
            return False
        sent = self.notify(WATCHDOG=1)
        if sent:
            self._last_ping = self._clock()
        return sent

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun (the action in flight is finishing)."""
        fields: dict[str, str | int] = {"STOPPING": 1}
        if status is not None:
            fields["STATUS"] = _one_line(status)
        return self.notify(**fields)

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (systemd >= 253 requires it); send
        :meth:`ready` when the reload is done, whether it succeeded or not."""
        fields: dict[str, str | int] = {"RELOADING": 1, "MONOTONIC_USEC": monotonic_usec()}
        if status is not None:
            fields["STATUS"] = _one_line(status)
        self._ready = False
        self._reloading = True
        return self.notify(**fields)

    # -- the loop's entry points

    def round_completed(self, status: str | None = None) -> bool:
        """What the loop calls after every completed round.

        The first call sends READY=1 (the first full probe round is done); later
        calls ping the watchdog, at most every quarter of its interval (the loop
        may run many rounds a second), and send STATUS= when the text changed.
        """
        if self._address is None:
            return False
        if not self._ready and not self._reloading:
            return self.ready(status)
        fields: dict[str, str | int] = {}
        if status is not None:
            line = _one_line(status)
            if line != self._last_status:
                fields["STATUS"] = self._last_status = line
        ping = self._watchdog_due()
        if ping:
            fields["WATCHDOG"] = 1
        if not fields:
            return False
        sent = self.notify(**fields)
        if sent and ping:
            self._last_ping = self._clock()
        return sent

    def _watchdog_due(self) -> bool:
        if self._watchdog_usec is None:
            return False
        if self._last_ping is None:
            return True
        return self._clock() - self._last_ping >= self._watchdog_usec / 4_000_000

    @contextmanager
    def action_budget(self, seconds: float) -> Iterator[None]:
        """Let one slow step (a promotion waiting up to ``promote_timeout``, a hook)
        run longer than ``WatchdogSec`` without being killed for it.

        On entry the watchdog timeout is raised to ``seconds`` plus the normal
        interval (``WATCHDOG_USEC=``) and pinged; on exit the normal timeout is
        restored and pinged again. A step stuck beyond its own bound is still
        caught: the raised timeout runs out. No-op without a watchdog, or when
        ``seconds`` fits in the normal interval.
        """
        usec = self._watchdog_usec
        extra = round(seconds * 1_000_000)
        if usec is None or extra <= usec // 2:
            yield
            return
        self.notify(WATCHDOG_USEC=usec + extra, WATCHDOG=1)
        try:
            yield
        finally:
            self.notify(WATCHDOG_USEC=usec, WATCHDOG=1)
            self._last_ping = self._clock()

    def close(self) -> None:
        """Close the socket (a later call reopens it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
