"""
Session keys: who a key belongs to, and for how long.

Two modes share one interface, L{SessionStore}: L{StoredSessions} keeps every
live key in memory (at most one per user), and L{SignedSessions} keeps nothing
and checks an HMAC instead.
"""

import hashlib
import hmac
import os
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from gameserver import keys
from gameserver.expiry import DeadlineQueue

DEFAULT_TTL = 600.0


class SessionStore(Protocol):
    """
    Issues session keys for users and tells whose a key is while it lives.
    """

    ttl: float

    def issue(self, user: int) -> bytes:
        """
        Return a new key for C{user}, live for C{ttl} seconds from now.
        """

    def user_for(self, key: bytes) -> int | None:
        """
        Return the user of a live key, or L{None} for a missing, unknown,
        forged, revoked or expired one.
        """

    def stop(self) -> None:
        """
        Release timers; the store is not used any more.
        """


class StoredSessions:
    """
    Keys held in memory, at most one live key per user.

    A new login revokes the user's previous key.  Keys are random, and expire
    exactly C{ttl} seconds after they were issued: using a key does not extend
    it.  All keys share one lifetime, so a L{DeadlineQueue} expires them in
    issue order under one timer, and memory per live session is two dict
    entries, the key itself and one queue entry.
    """

    def __init__(self, clock: IReactorTime, ttl: float = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self._clock = clock
        self._user_of: dict[bytes, int] = {}
        self._key_of: dict[int, bytes] = {}
        self._queue: DeadlineQueue[bytes] = DeadlineQueue(
            clock, ttl, self._expire, self._is_live
        )

    def __len__(self) -> int:
        """
        The number of live sessions.
        """
        self._queue.expire_due()
        return len(self._user_of)

    def has_session(self, user: int) -> bool:
        """
        Whether C{user} holds a live key (so a new login replaces it rather
        than adding one).
        """
        self._queue.expire_due()
        return user in self._key_of

    def issue(self, user: int) -> bytes:
        key, deadline = self.prepare(user)
        self.admit(user, key, deadline)
        return key

    def prepare(self, user: int) -> tuple[bytes, float]:
        """
        Draw a new key for C{user} and its deadline, without making it live:
        a durable store commits it first, then calls L{admit}.
        """
        self._queue.expire_due()
        key = keys.random_key()
        while key in self._user_of:  # pragma: no cover - 2**-128 odds
            key = keys.random_key()
        return key, self._clock.seconds() + self.ttl

    def admit(self, user: int, key: bytes, deadline: float) -> None:
        """
        Make C{key} C{user}'s live key until C{deadline}, revoking the
        user's previous key.  Deadlines must come in non-decreasing order.
        """
        old = self._key_of.get(user)
        if old is not None:
            del self._user_of[old]
            self._queue.withdraw()
        self._user_of[key] = user
        self._key_of[user] = key
        self._queue.push(key, deadline)

    def user_for(self, key: bytes) -> int | None:
        self._queue.expire_due()
        return self._user_of.get(key)

    def stop(self) -> None:
        """
        Stop the expiry timer.
        """
        self._queue.stop()

    def _expire(self, key: bytes, deadline: float) -> bool:
        # Keys are never reused, so an entry is live exactly while its key is.
        user = self._user_of.pop(key, None)
        if user is None:
            return False
        del self._key_of[user]
        return True

    def _is_live(self, key: bytes, deadline: float) -> bool:
        return key in self._user_of


# user (4 bytes), deadline in milliseconds (6 bytes: good for 8900 years), a
# random nonce so that two logins in the same millisecond get different keys
# (6 bytes), then the truncated MAC.
_USER_BYTES = 4
_DEADLINE_BYTES = 6
_NONCE_BYTES = 6
_PAYLOAD_BYTES = _USER_BYTES + _DEADLINE_BYTES + _NONCE_BYTES
_MAC_BYTES = 16
_SIGNED_BYTES = _PAYLOAD_BYTES + _MAC_BYTES
# 32 bytes are 256 bits; 43 base-62 digits (256.1 bits) hold them all.
SIGNED_KEY_LENGTH = 43
MIN_SECRET_BYTES = 16


class SignedSessions:
    """
    Stateless keys: the user, the expiry time and a nonce, signed with
    HMAC-SHA256.

    Nothing is stored per session, so several keys of one user can be live at
    once, and keys survive restarts and work on every instance that shares the
    secret.  A key cannot be revoked before it expires.
    """

    def __init__(
        self, clock: IReactorTime, secret: bytes, ttl: float = DEFAULT_TTL
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes")
        self.ttl = ttl
        self._clock = clock
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, hashlib.sha256)[:_MAC_BYTES]

    def issue(self, user: int) -> bytes:
        deadline_ms = round((self._clock.seconds() + self.ttl) * 1000)
        payload = (
            user.to_bytes(_USER_BYTES, "big")
            + deadline_ms.to_bytes(_DEADLINE_BYTES, "big")
            + os.urandom(_NONCE_BYTES)
        )
        signed = int.from_bytes(payload + self._mac(payload), "big")
        return keys.encode(signed, SIGNED_KEY_LENGTH)

    def user_for(self, key: bytes) -> int | None:
        if len(key) != SIGNED_KEY_LENGTH:
            return None
        number = keys.decode(key)
        if number is None or number.bit_length() > _SIGNED_BYTES * 8:
            return None
        signed = number.to_bytes(_SIGNED_BYTES, "big")
        payload, mac = signed[:_PAYLOAD_BYTES], signed[_PAYLOAD_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        deadline_ms = int.from_bytes(
            payload[_USER_BYTES : _USER_BYTES + _DEADLINE_BYTES]
        )
        if self._clock.seconds() * 1000 >= deadline_ms:
            return None
        return int.from_bytes(payload[:_USER_BYTES])

    def stop(self) -> None:
        """
        Nothing to stop: signed sessions keep no timers.
        """
