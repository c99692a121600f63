"""
Tests for L{gameserver.sessions}: keys, expiry and the two session modes.
"""

import re

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gameserver.sessions import SignedSessions, StoredSessions

SECRET = b"0123456789abcdef0123456789abcdef"
KEY = re.compile(rb"[A-Za-z0-9]+")


class StoredSessionsTests(TestCase):
    """
    In-memory sessions: one live key per user, fixed lifetime.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.sessions = StoredSessions(self.clock, ttl=600)

    def test_key_alphabet_and_length(self) -> None:
        """Keys are only ASCII letters and digits, and long enough for 128 bits."""
        key = self.sessions.issue(1)
        self.assertTrue(KEY.fullmatch(key))
        self.assertEqual(len(key), 22)

    def test_keys_unique(self) -> None:
        """Keys of many users are all different."""
        keys = {self.sessions.issue(user) for user in range(10_000)}
        self.assertEqual(len(keys), 10_000)

    def test_key_identifies_user(self) -> None:
        """A live key names the user it was issued to."""
        key = self.sessions.issue(4711)
        self.assertEqual(self.sessions.user_for(key), 4711)

    def test_unknown_key(self) -> None:
        """An unknown or forged key names nobody."""
        self.sessions.issue(1)
        self.assertIsNone(self.sessions.user_for(b"UICSNDK"))
        self.assertIsNone(self.sessions.user_for(b""))

    def test_valid_before_ttl(self) -> None:
        """A key is still valid 599.9 s after it was issued."""
        key = self.sessions.issue(1)
        self.clock.advance(599.9)
        self.assertEqual(self.sessions.user_for(key), 1)

    def test_expired_at_ttl(self) -> None:
        """A key is invalid 600 s after it was issued."""
        key = self.sessions.issue(1)
        self.clock.advance(599.9)
        self.clock.advance(0.1)
        self.assertIsNone(self.sessions.user_for(key))
        self.assertEqual(len(self.sessions), 0)

    def test_expiry_is_exact_between_timer_runs(self) -> None:
        """A key checked at its deadline is refused even if no timer ran yet."""
        first = self.sessions.issue(1)
        self.clock.advance(0.5)
        second = self.sessions.issue(2)
        self.clock.advance(599.5)  # the timer runs for the first key only
        self.assertIsNone(self.sessions.user_for(first))
        self.assertEqual(self.sessions.user_for(second), 2)
        self.clock.pump([0.5])  # second key due; its timer is coalesced
        self.assertIsNone(self.sessions.user_for(second))

    def test_use_does_not_extend(self) -> None:
        """Using a key does not extend its lifetime."""
        key = self.sessions.issue(1)
        for _ in range(6):
            self.clock.advance(99)
            self.assertEqual(self.sessions.user_for(key), 1)
        self.clock.advance(6)
        self.assertIsNone(self.sessions.user_for(key))

    def test_relogin_revokes_old_key(self) -> None:
        """A new login revokes the user's previous key in stored mode."""
        old = self.sessions.issue(1)
        new = self.sessions.issue(1)
        self.assertNotEqual(old, new)
        self.assertIsNone(self.sessions.user_for(old))
        self.assertEqual(self.sessions.user_for(new), 1)

    def test_relogin_gets_full_lifetime(self) -> None:
        """A key issued by a re-login lives its full lifetime from then."""
        self.sessions.issue(1)
        self.clock.advance(300)
        new = self.sessions.issue(1)
        self.clock.advance(599)
        self.assertEqual(self.sessions.user_for(new), 1)
        self.clock.advance(1)
        self.assertIsNone(self.sessions.user_for(new))

    def test_memory_bounded_by_live_keys(self) -> None:
        """Repeated logins of one user keep one live key and a bounded queue."""
        for _ in range(20_000):
            self.sessions.issue(1)
        self.assertEqual(len(self.sessions), 1)
        self.assertLessEqual(len(self.sessions._queue), 1026)

    def test_timer_frees_expired_sessions(self) -> None:
        """Expired sessions are removed by the timer without any lookup."""
        for user in range(100):
            self.sessions.issue(user)
        self.clock.advance(601)
        self.assertEqual(len(self.sessions._user_of), 0)
        self.assertEqual(len(self.sessions._key_of), 0)

    def test_stop(self) -> None:
        """stop cancels the expiry timer."""
        self.sessions.issue(1)
        self.sessions.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SignedSessionsTests(TestCase):
    """
    Stateless HMAC-signed sessions.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.sessions = SignedSessions(self.clock, SECRET, ttl=600)

    def test_key_alphabet(self) -> None:
        """Signed keys are only ASCII letters and digits."""
        self.assertTrue(KEY.fullmatch(self.sessions.issue(2**31 - 1)))

    def test_key_identifies_user(self) -> None:
        """A signed key names the user it was issued to."""
        for user in (0, 4711, 2**31 - 1):
            self.assertEqual(self.sessions.user_for(self.sessions.issue(user)), user)

    def test_several_live_keys(self) -> None:
        """Several keys of one user are live at once in signed mode."""
        first = self.sessions.issue(1)
        self.clock.advance(1)
        second = self.sessions.issue(1)
        self.assertEqual(self.sessions.user_for(first), 1)
        self.assertEqual(self.sessions.user_for(second), 1)

    def test_expiry(self) -> None:
        """A signed key is valid at 599.9 s and invalid at 600 s."""
        self.clock.advance(1234.5)
        key = self.sessions.issue(1)
        self.clock.advance(599.9)
        self.assertEqual(self.sessions.user_for(key), 1)
        self.clock.advance(0.1)
        self.assertIsNone(self.sessions.user_for(key))

    def test_same_millisecond_keys_differ(self) -> None:
        """Two logins of one user at the same instant get different keys."""
        self.assertNotEqual(self.sessions.issue(1), self.sessions.issue(1))

    def test_wrong_secret(self) -> None:
        """A key signed with another secret is refused."""
        other = SignedSessions(self.clock, b"another secret, 16+ bytes long")
        self.assertIsNone(self.sessions.user_for(other.issue(1)))

    def test_tampered_key(self) -> None:
        """Changing any character of a key makes it invalid."""
        key = self.sessions.issue(1)
        for index in range(len(key)):
            for replacement in (b"0", b"z"):
                tampered = key[:index] + replacement + key[index + 1 :]
                if tampered != key:
                    self.assertIsNone(self.sessions.user_for(tampered))

    def test_truncated_and_garbage_keys(self) -> None:
        """Truncated, extended, non-alphanumeric and oversized keys are refused."""
        key = self.sessions.issue(1)
        for bad in (key[:-1], key + b"0", b"", b"!" * len(key), b"z" * len(key)):
            self.assertIsNone(self.sessions.user_for(bad))

    def test_survives_restart(self) -> None:
        """A key works on a new instance that shares the secret."""
        key = self.sessions.issue(42)
        restarted = SignedSessions(self.clock, SECRET)
        self.assertEqual(restarted.user_for(key), 42)

    def test_short_secret_refused(self) -> None:
        """A secret under 16 bytes is refused."""
        self.assertRaises(ValueError, SignedSessions, self.clock, b"short")

    def test_keeps_no_timers(self) -> None:
        """Signed sessions schedule nothing on the clock."""
        self.sessions.issue(1)
        self.sessions.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
