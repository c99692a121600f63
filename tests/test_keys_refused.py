"""
Forged, truncated, mutated and replayed keys of every kind are refused:
stored and signed session keys (401), relay pairing keys (5/*/*) and game
keys (13/*/*), through the real channel and resource tree on a Clock.
"""

import hashlib
import hmac

from twisted.trial.unittest import TestCase

from gameserver import keys
from gameserver.sessions import SIGNED_KEY_LENGTH
from tests.clock_site import ClockSite


def variants(key: bytes) -> list[bytes]:
    """
    Keys a client might try instead of C{key}: never issued, cut short,
    one character changed, lengthened, case-flipped, empty.
    """
    flipped = bytes([key[0] ^ 0x20]) + key[1:] if chr(key[0]).isalpha() else b""
    changed = [
        key[:i] + (b"A" if key[i : i + 1] != b"A" else b"B") + key[i + 1 :]
        for i in (0, len(key) // 2, len(key) - 1)
    ]
    return [
        keys.random_key(),
        keys.encode(0, len(key)),
        key[:-1],
        key[: len(key) // 2],
        key + b"A",
        key + key,
        b"",
        b"*",
        *changed,
        *([flipped] if flipped else []),
    ]


class SessionKeyTests(TestCase):
    """
    Score posts with keys that are not a live key of this server get 401.
    """

    def site(self, *argv: str) -> ClockSite:
        site = ClockSite("--rate-limit", "off", *argv)
        self.addCleanup(site.stop)
        return site

    def post(self, site: ClockSite, key: bytes, level: int = 1) -> int:
        return site.post(b"/%d/score?sessionkey=%s" % (level, key), b"10")[0]

    def login(self, site: ClockSite, user: int) -> bytes:
        code, _, key = site.get(b"/%d/login" % user)
        self.assertEqual(code, 200)
        return key

    def signed_site(self, secret: bytes = b"s" * 32, *argv: str) -> ClockSite:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(secret)
        return self.site("--sessions", "signed", "--secret-file", path, *argv)

    def test_stored_forged_and_truncated(self) -> None:
        """Stored mode: every variant of a live key is refused; the key works."""
        site = self.site()
        key = self.login(site, 7)
        for forged in variants(key):
            self.assertEqual(self.post(site, forged), 401, forged)
        self.assertEqual(self.post(site, key), 200)
        self.assertEqual(site.get(b"/1/highscorelist")[2], b"7=10")

    def test_stored_replayed_after_relogin(self) -> None:
        """Stored mode: a key replayed after its user logged in again is refused."""
        site = self.site()
        old = self.login(site, 7)
        new = self.login(site, 7)
        self.assertEqual(self.post(site, old), 401)
        self.assertEqual(self.post(site, new), 200)

    def test_stored_replayed_after_expiry(self) -> None:
        """Stored mode: a key replayed at its expiry is refused."""
        site = self.site("--session-ttl", "60")
        key = self.login(site, 7)
        site.clock.advance(59.9)
        self.assertEqual(self.post(site, key), 200)
        site.clock.advance(0.1)
        self.assertEqual(self.post(site, key), 401)

    def test_stored_key_of_another_server(self) -> None:
        """Stored mode: a key from another instance (or before a restart) is
        refused."""
        other = self.site()
        key = self.login(other, 7)
        self.assertEqual(self.post(self.site(), key), 401)

    def test_signed_forged_and_truncated(self) -> None:
        """Signed mode: every variant of a live key is refused; the key works."""
        site = self.signed_site()
        key = self.login(site, 7)
        self.assertEqual(len(key), SIGNED_KEY_LENGTH)
        for forged in [*variants(key), keys.random_key() * 2]:
            self.assertEqual(self.post(site, forged), 401, forged)
        self.assertEqual(self.post(site, key), 200)

    def test_signed_other_secret(self) -> None:
        """Signed mode: a key signed under another secret is refused."""
        key = self.login(self.signed_site(b"t" * 32), 7)
        self.assertEqual(self.post(self.signed_site(b"s" * 32), key), 401)

    def test_signed_user_swapped(self) -> None:
        """Signed mode: a key whose user field is changed (without the secret)
        is refused."""
        site = self.signed_site()
        key = self.login(site, 7)
        raw = bytearray(keys.decode(key).to_bytes(32, "big"))  # type: ignore[union-attr]
        raw[3] = 8  # user 7 -> 8
        forged = keys.encode(int.from_bytes(raw, "big"), SIGNED_KEY_LENGTH)
        self.assertEqual(self.post(site, forged), 401)

    def test_signed_made_with_guessed_secret(self) -> None:
        """Signed mode: a well-formed key MACed under a guessed secret is refused."""
        site = self.signed_site()
        payload = (7).to_bytes(4, "big") + (10**12).to_bytes(6, "big") + b"\0" * 6
        mac = hmac.digest(b"guess" * 8, payload, hashlib.sha256)[:16]
        forged = keys.encode(int.from_bytes(payload + mac, "big"), SIGNED_KEY_LENGTH)
        self.assertEqual(self.post(site, forged), 401)

    def test_signed_replayed_after_expiry(self) -> None:
        """Signed mode: a key replayed at its expiry is refused."""
        site = self.signed_site(b"s" * 32, "--session-ttl", "60")
        key = self.login(site, 7)
        site.clock.advance(59.9)
        self.assertEqual(self.post(site, key), 200)
        site.clock.advance(0.1)
        self.assertEqual(self.post(site, key), 401)

    def test_stored_key_in_signed_mode(self) -> None:
        """A stored-mode key is refused by a signed-mode server, and the other
        way round."""
        stored_key = self.login(self.site(), 7)
        signed = self.signed_site()
        self.assertEqual(self.post(signed, stored_key), 401)
        signed_key = self.login(signed, 7)
        self.assertEqual(self.post(self.site(), signed_key), 401)


class RelayKeyTests(TestCase):
    """
    Relay requests with keys that are not live get 5/*/* or 13/*/*.
    """

    def setUp(self) -> None:
        self.server = ClockSite("--rate-limit", "off")
        self.addCleanup(self.server.stop)

    def relay(self, body: bytes) -> bytes:
        return self.server.post(b"/relay", body)[2]

    def register(self, name: bytes) -> bytes:
        reply = self.relay(b"0,%s,*,*,*" % name)
        self.assertTrue(reply.startswith(b"0/0/"), reply)
        return reply[4:]

    def game(self) -> tuple[bytes, bytes, bytes, bytes]:
        """
        Two players through the handshake: their pairing and game keys.
        """
        a, b = self.register(b"alice"), self.register(b"bob")
        self.assertEqual(self.relay(b"2,*,%s,*,*" % a), b"0/3/bob")
        self.assertEqual(self.relay(b"2,*,%s,*,*" % b), b"0/4/alice")
        self.relay(b"3,*,%s,*,*" % a)
        self.relay(b"3,*,%s,*,*" % b)
        self.assertEqual(self.relay(b"4,*,%s,*,*" % b), b"0/7/*")
        game_a = self.relay(b"4,*,%s,*,*" % a)[4:].split(b"|")[0]
        game_b = self.relay(b"4,*,%s,*,*" % b)[4:].split(b"|")[0]
        return a, b, game_a, game_b

    def test_pairing_forged_and_truncated(self) -> None:
        """Every variant of a live pairing key gets 5/*/*; the key works."""
        key = self.register(b"alice")
        for forged in variants(key):
            if forged in (b"", b"*"):
                continue  # not a key at all: an out-of-order request
            self.assertEqual(self.relay(b"2,*,%s,*,*" % forged), b"5/*/*", forged)
        self.assertEqual(self.relay(b"2,*,%s,*,*" % key), b"0/2/*")

    def test_pairing_replayed_after_unregister(self) -> None:
        """A pairing key replayed after UNREGISTER gets 5/*/*."""
        key = self.register(b"alice")
        self.assertEqual(self.relay(b"1,*,%s,*,*" % key), b"0/1/*")
        self.assertEqual(self.relay(b"2,*,%s,*,*" % key), b"5/*/*")

    def test_pairing_replayed_after_timeout(self) -> None:
        """A pairing key replayed after the pairing timeout gets 5/*/*."""
        key = self.register(b"alice")
        self.server.clock.advance(26)
        self.assertEqual(self.relay(b"2,*,%s,*,*" % key), b"5/*/*")

    def test_game_forged_and_truncated(self) -> None:
        """Every variant of a live game key gets 13/*/*; the key works."""
        _, _, game_a, _ = self.game()
        for forged in variants(game_a):
            if forged in (b"", b"*"):
                continue
            reply = self.relay(b"6,x,%s,0,0" % forged)
            self.assertEqual(reply, b"13/*/*", forged)
        self.assertEqual(self.relay(b"6,x,%s,0,0" % game_a), b"0/10/*")

    def test_keys_not_interchangeable(self) -> None:
        """A pairing key is no game key and a game key no pairing key."""
        a, _, game_a, _ = self.game()
        self.assertEqual(self.relay(b"6,x,%s,0,0" % a), b"13/*/*")
        self.assertEqual(self.relay(b"2,*,%s,*,*" % game_a), b"5/*/*")

    def test_partner_seat_refused(self) -> None:
        """A game key with the partner's seat number gets 13/*/*."""
        _, _, game_a, game_b = self.game()
        self.assertEqual(self.relay(b"6,x,%s,1,0" % game_a), b"13/*/*")
        self.assertEqual(self.relay(b"6,x,%s,0,0" % game_b), b"13/*/*")

    def test_game_replayed_after_quit(self) -> None:
        """A game key replayed after its player quit gets 13/*/*."""
        _, _, game_a, _ = self.game()
        self.assertEqual(self.relay(b"5,bye,%s,0,0" % game_a), b"0/10/*")
        self.assertEqual(self.relay(b"6,x,%s,0,1" % game_a), b"13/*/*")

    def test_game_replayed_after_timeout(self) -> None:
        """A game key replayed after the game timeout gets 13/*/*."""
        _, _, game_a, _ = self.game()
        self.server.clock.advance(31)
        self.assertEqual(self.relay(b"6,x,%s,0,0" % game_a), b"13/*/*")
