"""
The relay with its whole state in Redis (C{--redis}), so that two players
polling different gameserver instances can pair and play.

L{RedisRelay} answers the same requests as L{gameserver.relay.Relay} with
the same replies, but each L{RedisRelay.handle} is one Lua script run
atomically in Redis (L{gameserver.redis_relay_lua}) and answers a
L{Deferred}.  Timeouts are Redis key expiry, refreshed on activity, so a
player dropped by one instance is dropped for all, and nothing stays in
Redis once players and games are gone.  C{docs/relay.md} describes the key
layout and what holds across instances.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, assert_never

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gameserver.keys import random_key
from gameserver.redis_connection import Arg, Key, RedisReplyError, Script
from gameserver.redis_relay_lua import relay_scripts
from gameserver.relay import (
    GameStep,
    PairingStep,
    Register,
    RelayConfig,
    Reply,
    Request,
)

#: The default prefix of every key; its hash tag puts them in one slot.
PREFIX: Final = "{relay}:"



class ScriptRunner(Protocol):
    """
    What the relay uses of L{gameserver.redis_connection.RedisConnection}.
    """

    def run(
        self, script: Script, keys: Sequence[Key] = (), args: Sequence[Arg] = ()
    ) -> "Deferred[Any]": ...


@dataclass(frozen=True, slots=True)
class RelayCounts:
    """
    The relay's sizes, as L{gameserver.relay.Relay} reports them.
    """

    players: int
    waiting: int
    games: int


def parse_reply(body: bytes) -> Reply:
    """
    A script's answer C{<status>/<code>/<payload>} as a L{Reply}.
    """
    status, code, payload = body.decode("utf-8").split("/", 2)
    return Reply(int(status), code, payload)


class RedisRelay:
    """
    The relay protocol's matchmaking and data relay, held in Redis.

    Construct it with the process's Redis connection and the relay options;
    L{handle} answers a L{Deferred} that fails (with
    L{gameserver.redis_connection.RedisUnavailable}) when Redis does not
    answer in time, which the resource turns into C{503}.

    Every key starts with C{prefix}, which must hold a hash tag (C{{...}}):
    Redis Cluster then keeps all of them in one slot.  Instances sharing a
    relay must use the same prefix and the same config.

    L{players}, L{waiting} and L{games} are what the last L{refresh_counts}
    found (L{None} before the first); reading one starts a refresh in the
    background, so a metrics scrape shows the counts of the scrape before.
    """

    _log = Logger()

    def __init__(
        self,
        connection: ScriptRunner,
        config: RelayConfig | None = None,
        prefix: str = PREFIX,
    ) -> None:
        self.config = c = config if config is not None else RelayConfig()
        self._connection = connection
        self.prefix = prefix
        # Every script names one key with the prefix: Redis Cluster routes it
        # to the slot of the prefix's hash tag, where all the relay's keys are.
        self._keys = [prefix + "players"]
        scripts = relay_scripts(prefix, c)
        self._register = scripts["register"]
        self._pairing = scripts["pairing"]
        self._game_step = scripts["game_step"]
        self._count = scripts["counts"]
        self._counts: RelayCounts | None = None
        self._refreshing = False
        #: Seconds the last relay request took; set by whoever serves it.
        self.last_request_seconds = 0.0

    def handle(self, request: Request) -> "Deferred[Reply]":
        """
        Apply one request atomically in Redis; its reply.
        """
        match request:
            case Register():
                wanted = request.wanted
                script = self._register
                args: list[Arg] = [
                    _new_key(),
                    request.name,
                    "0" if wanted is None else "1",
                    "" if wanted is None else wanted,
                    "1" if request.long_wait else "0",
                ]
            case PairingStep():
                script = self._pairing
                # Two fresh game keys in case this MAP_READY starts a game:
                # Lua has no source of unguessable randomness.
                args = [int(request.symbol), request.key, _new_key(), _new_key()]
            case GameStep():
                script = self._game_step
                args = [
                    request.key,
                    request.seat,
                    request.counter,
                    request.data,
                    "1" if request.quit else "0",
                ]
            case _:
                assert_never(request)
        d = self._connection.run(script, self._keys, args)
        return d.addCallbacks(parse_reply, self._failed)

    def _failed(self, reason: Failure) -> Failure:
        if reason.check(RedisReplyError):
            # Redis ran the script and refused it (a bug, OOM, READONLY...):
            # worth an error, unlike an outage, which the connection logs.
            self._log.error(
                "relay script failed: {error}", error=reason.getErrorMessage()
            )
        return reason

    def refresh_counts(self) -> "Deferred[RelayCounts]":
        """
        Count the players registered, waiting, and the games in progress.
        """
        d = self._connection.run(self._count, self._keys)

        def counted(values: list[int]) -> RelayCounts:
            self._counts = RelayCounts(*(int(v) for v in values))
            return self._counts

        return d.addCallback(counted)

    def _last(self) -> RelayCounts | None:
        if not self._refreshing:
            self._refreshing = True

            def done(result: object) -> None:
                self._refreshing = False

            self.refresh_counts().addErrback(
                lambda f: self._log.debug(
                    "relay counts not refreshed: {error}", error=f.getErrorMessage()
                )
            ).addBoth(done)
        return self._counts

    @property
    def players(self) -> int | None:
        """
        Registered players (waiting or in the handshake), as last counted.
        """
        counts = self._last()
        return None if counts is None else counts.players

    @property
    def waiting(self) -> int | None:
        """
        Players waiting for a partner, as last counted.
        """
        counts = self._last()
        return None if counts is None else counts.waiting

    @property
    def games(self) -> int | None:
        """
        Games with at least one side still in them, as last counted.
        """
        counts = self._last()
        return None if counts is None else counts.games

    def stop(self) -> None:
        """
        Nothing to stop: the relay's timers are Redis's key expiry.
        """


def _new_key() -> str:
    # 128 random bits never collide in practice; the scripts refuse a key
    # that is taken anyway.
    return random_key().decode("ascii")
