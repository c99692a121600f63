"""
Graceful shutdown, and the signals of a long-running server.

L{GameService} stops in order: stop listening (new connections are refused),
let open connections finish the requests they have sent, for at most
C{--shutdown-timeout} seconds, then stop the state (the durable store
commits and answers what is queued).  L{install_signal_handlers} makes
SIGTERM run that shutdown and exit 0 (twistd would otherwise re-raise the
signal and end with status 143), and SIGHUP reopen the access log.
"""

import signal
from collections.abc import Callable, Sequence
from contextlib import suppress
from types import FrameType
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from gameserver.channel import GameHTTPFactory

DEFAULT_SHUTDOWN_TIMEOUT = 10.0


class GameService(MultiService):
    """
    The whole server: listeners, the factory serving them, the state.

    C{listeners} are stopped first, then C{factory} drains (at most
    C{timeout} seconds), then the other services (the state) stop.
    """

    log = Logger()

    def __init__(
        self,
        factory: GameHTTPFactory,
        state: IService,
        listeners: Sequence[IService],
        timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.factory = factory
        self.timeout = timeout
        self.stopping = False
        self._listeners = list(listeners)
        self._state = state
        state.setServiceParent(self)
        for listener in self._listeners:
            listener.setServiceParent(self)
        self._stopped: Deferred[None] | None = None

    def stopService(self) -> "Deferred[None]":
        if self._stopped is not None:
            return self._stopped
        self.stopping = True
        self.running = 0
        self.log.info(
            "shutting down: no new connections, up to {timeout}s for requests "
            "under way",
            timeout=self.timeout,
        )
        listening = DeferredList(
            [maybeDeferred(listener.stopService) for listener in self._listeners]
        )

        def drain(_: object) -> "Deferred[None]":
            return self.factory.drain(self.timeout)

        def stop_state(_: object) -> "Deferred[Any]":
            return maybeDeferred(self._state.stopService)

        def done(_: object) -> None:
            self.log.info("shut down")

        d: Deferred[Any] = listening.addCallback(drain)
        d.addCallback(stop_state)
        d.addCallback(done)
        self._stopped = d
        return d


def install_signal_handlers(reactor: Any, reopen_logs: Callable[[], None]) -> None:
    """
    Once C{reactor} runs (after it installed its own handlers): SIGTERM and
    SIGINT stop the reactor, which stops the services gracefully, and the
    process exits 0; SIGHUP calls C{reopen_logs}.
    """
    log = Logger(namespace="gameserver.shutdown")

    def on_stop(number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        log.info("received {signal}, shutting down gracefully", signal=name)
        reactor.callFromThread(_stop, reactor)

    def on_hup(number: int, frame: FrameType | None) -> None:
        reactor.callFromThread(reopen_logs)

    def install() -> None:
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    reactor.callWhenRunning(install)


def _stop(reactor: Any) -> None:
    # A second signal while stopping changes nothing.
    with suppress(ReactorNotRunning):
        reactor.stop()
