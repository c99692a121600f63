"""
The scores store on Redis (C{--redis URL}): every instance sharing one Redis
serves the same sessions and high-score lists.

Keys (each call touches exactly one key, so one Redis Cluster slot; the
C{{...}} hash tags keep it so if a key is ever added next to one):

    gs:{user:<user>}   stored mode: the user's one live session key, with a
                       PX expiry of --session-ttl; a new login overwrites it
                       (which revokes the old key) and nothing outlives it
    gs:{lvl:<level>}   the level's list body "user=score,..." best first, at
                       most 15 entries; kept (it is the game's data)

A stored-mode key here is C{(user << 128) | 128 random bits} written in 27
base-62 digits, so a score post finds the user's slot from the key alone:
C{GET gs:{user:U}} must return exactly the key.  Signed sessions need no
storage and are checked in this process.

A list body is its own state: entries are kept best first and, among equal
scores, in the order they were reached, so a new entry goes after every
entry with a score at least as high, and the Lua script that records a
score (atomic in Redis) keeps the tie rule across instances: whoever's post
Redis ran first reached the score first.
"""

import os
from typing import Any

from twisted.internet.defer import Deferred, succeed

from gameserver import keys
from gameserver.leaderboard import LIST_LENGTH
from gameserver.redis_connection import RedisConnection, Script
from gameserver.sessions import SignedSessions
from gameserver.uint31 import MAX as UINT31_MAX

# 31 bits of user and 128 random bits fit in 27 base-62 digits (160.7 bits).
REDIS_KEY_LENGTH = 27
_RANDOM_BITS = 128
_RANDOM_MASK = (1 << _RANDOM_BITS) - 1

# KEYS[1]: the level's list; ARGV: user, score.  Returns 1 if the list
# changed.  Mirrors gameserver.leaderboard.Board.record.
RECORD = Script(
    """
local user = tonumber(ARGV[1])
local score = tonumber(ARGV[2])
local length = tonumber(ARGV[3])
local body = redis.call('GET', KEYS[1])
local users, scores = {}, {}
if body then
  for u, s in string.gmatch(body, '(%d+)=(%d+)') do
    users[#users + 1] = tonumber(u)
    scores[#scores + 1] = tonumber(s)
  end
end
local n = #users
if n >= length and score <= scores[n] then
  return 0
end
for i = 1, n do
  if users[i] == user then
    if score <= scores[i] then
      return 0
    end
    table.remove(users, i)
    table.remove(scores, i)
    break
  end
end
local at = #users + 1
for i = 1, #users do
  if score > scores[i] then
    at = i
    break
  end
end
table.insert(users, at, user)
table.insert(scores, at, score)
local parts = {}
for i = 1, math.min(#users, length) do
  parts[i] = string.format('%d=%d', users[i], scores[i])
end
redis.call('SET', KEYS[1], table.concat(parts, ','))
return 1
"""
)


def user_key(user: int) -> bytes:
    """
    The Redis key holding C{user}'s live session key.
    """
    return b"gs:{user:%d}" % user


def level_key(level: int) -> bytes:
    """
    The Redis key holding C{level}'s list body.
    """
    return b"gs:{lvl:%d}" % level


def new_session_key(user: int) -> bytes:
    """
    A fresh stored-mode key for C{user}: the user and 128 random bits.
    """
    random = int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
    return keys.encode(user << _RANDOM_BITS | random, REDIS_KEY_LENGTH)


def user_of_key(key: bytes) -> int | None:
    """
    The user a stored-mode key claims to belong to, or L{None} if it is not
    one of ours (no need to ask Redis then).
    """
    if len(key) != REDIS_KEY_LENGTH:
        return None
    number = keys.decode(key)
    if number is None:
        return None
    user = number >> _RANDOM_BITS
    return user if user <= UINT31_MAX else None


class RedisScores:
    """
    A L{gameserver.scores.ScoresBackend} on Redis; every answer is a
    L{Deferred} (but signed-mode logins, which need no storage), failing
    with L{gameserver.redis_connection.RedisUnavailable} when Redis does
    not answer in time.
    """

    def __init__(
        self,
        connection: RedisConnection,
        ttl: float,
        signed: SignedSessions | None = None,
    ) -> None:
        """
        @param signed: the signed sessions of C{--sessions=signed}; stored
            sessions (in Redis) when L{None}.
        """
        self.connection = connection
        self.ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self._signed = signed

    def login(self, user: int) -> "bytes | Deferred[bytes]":
        if self._signed is not None:
            return self._signed.issue(user)
        key = new_session_key(user)
        d = self.connection.command("SET", user_key(user), key, "PX", self._ttl_ms)
        return d.addCallback(lambda _: key)

    def post_score(self, key: bytes, level: int, score: int) -> "Deferred[bool]":
        if self._signed is not None:
            user = self._signed.user_for(key)
            if user is None:
                return succeed(False)
            return self._record(level, user, score)
        claimed = user_of_key(key)
        if claimed is None:
            return succeed(False)
        user = claimed

        def check(live: bytes | None) -> "bool | Deferred[bool]":
            if live != key:
                return False
            return self._record(level, user, score)

        return self.connection.command("GET", user_key(user)).addCallback(check)

    def _record(self, level: int, user: int, score: int) -> "Deferred[bool]":
        d = self.connection.run(RECORD, [level_key(level)], [user, score, LIST_LENGTH])
        return d.addCallback(lambda _: True)

    def high_score_list(self, level: int) -> "Deferred[bytes]":
        def body(value: Any) -> bytes:
            return b"" if value is None else bytes(value)

        return self.connection.command("GET", level_key(level)).addCallback(body)

    def healthy(self) -> bool:
        return self.connection.healthy()

    def stop(self) -> None:
        """
        Nothing to stop here: the connection is shared with the relay and
        stopped after both.
        """
