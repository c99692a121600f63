"""
Tests for L{gameserver.relay}: every rule of the relay protocol's domain, on a
fake clock.
"""

import re
import sys

from twisted.trial.unittest import TestCase

from gameserver.relay import (
    Code,
    Errors,
    GameStep,
    PairingStep,
    Relay,
    RelayConfig,
    Reply,
    Symbol,
    held_size,
)
from tests.relay_support import RelayHarness, Side, text

KEY = re.compile(r"[A-Za-z0-9]{22}")


class RegisterTests(TestCase):
    """
    REGISTER and UNREGISTER.
    """

    def test_register_replies_0_0_with_pairing_key(self) -> None:
        """REGISTER answers 0/0/<pairing key> of 22 letters and digits."""
        reply = RelayHarness().register("alice")
        self.assertTrue(reply.startswith("0/0/"), reply)
        self.assertTrue(KEY.fullmatch(reply[4:]), reply)

    def test_register_keys_are_distinct(self) -> None:
        """Every registration gets a different key, even under the same name."""
        h = RelayHarness()
        keys = {h.key("alice") for _ in range(100)}
        self.assertEqual(len(keys), 100)

    def test_unregister_replies_0_1(self) -> None:
        """UNREGISTER answers 0/1/* and the key is then unknown (5/*/*)."""
        h = RelayHarness()
        key = h.key("alice")
        self.assertEqual(h.unregister(key), "0/1/*")
        self.assertEqual(h.pair(key), "5/*/*")
        self.assertEqual(h.relay.players, 0)

    def test_unknown_pairing_key_5(self) -> None:
        """Any pairing request with a key never handed out answers 5/*/*."""
        h = RelayHarness()
        h.key("alice")
        for symbol in (
            Symbol.UNREGISTER,
            Symbol.REQUEST_PAIR,
            Symbol.MAP_INIT,
            Symbol.MAP_READY,
        ):
            self.assertEqual(h.step(symbol, "x" * 22), "5/*/*", symbol)

    def test_other_spellings_of_a_key_5(self) -> None:
        """A pairing key cut, padded, changed or not ASCII answers 5/*/*."""
        h = RelayHarness()
        key = h.key("alice")
        changed = ("1" if key[0] == "0" else "0") + key[1:]
        for other in (key[1:], "0" + key, key + "0", changed, key[:-1] + "\u00e9", ""):
            self.assertEqual(h.pair(other), "5/*/*", other)
        self.assertEqual(h.pair(key), "0/2/*")

    def test_game_key_as_pairing_key_5(self) -> None:
        """A game key sent with a pairing request answers 5/*/*."""
        h = RelayHarness()
        a, _ = h.game()
        self.assertEqual(h.pair(a.key), "5/*/*")

    def test_pool_full_11(self) -> None:
        """Past max_players registered players, REGISTER answers 11/*/*."""
        h = RelayHarness(max_players=2)
        h.key("a")
        key = h.key("b")
        self.assertEqual(h.register("c"), "11/*/*")
        h.unregister(key)
        self.assertTrue(h.register("c").startswith("0/0/"))


class RandomPairingTests(TestCase):
    """
    REQUEST_PAIR without a named partner.
    """

    def test_alone_still_looking_0_2(self) -> None:
        """A player alone in the pool is told 0/2/* (still looking)."""
        h = RelayHarness()
        key = h.key("alice")
        self.assertEqual(h.pair(key), "0/2/*")
        self.assertEqual(h.pair(key), "0/2/*")

    def test_asker_server_0_3_found_client_0_4(self) -> None:
        """The asker gets 0/3/<partner>, the found player 0/4/<asker> next."""
        h = RelayHarness()
        alice, bob = h.key("alice"), h.key("bob")
        self.assertEqual(h.pair(bob), "0/3/alice")
        self.assertEqual(h.pair(alice), "0/4/bob")

    def test_paired_reply_repeats(self) -> None:
        """Asking again once paired repeats the same reply (a lost reply)."""
        h = RelayHarness()
        alice, bob = h.paired()
        self.assertEqual(h.pair(bob), "0/3/alice")
        self.assertEqual(h.pair(alice), "0/4/bob")
        self.assertEqual(h.pair(alice), "0/4/bob")

    def test_longest_waiting_is_found(self) -> None:
        """The asker is paired with the longest-waiting other player."""
        h = RelayHarness()
        h.key("first")
        h.clock.advance(1)
        h.key("second")
        self.assertEqual(h.pair(h.key("asker")), "0/3/first")
        self.assertEqual(h.pair(h.key("late")), "0/3/second")

    def test_waiting_order_is_registration_not_last_request(self) -> None:
        """Asking again does not move a player back in the waiting order."""
        h = RelayHarness()
        first = h.key("first")
        self.assertEqual(h.pair(first), "0/2/*")
        h.clock.advance(1)
        h.key("second")
        h.clock.advance(1)
        self.assertEqual(h.pair(first), "0/3/second")
        h2 = RelayHarness()
        first = h2.key("first")
        h2.key("second")
        h2.clock.advance(1)
        self.assertEqual(h2.pair(h2.key("asker")), "0/3/first")

    def test_paired_players_leave_the_pool(self) -> None:
        """A paired player is never found again: one pairing at a time."""
        h = RelayHarness()
        h.paired()
        carol = h.key("carol")
        self.assertEqual(h.pair(carol), "0/2/*")
        self.assertEqual(h.relay.waiting, 1)

    def test_random_skips_named(self) -> None:
        """A random asker never finds a player who named a partner."""
        h = RelayHarness()
        h.key("alice", wanted="bob")
        carol = h.key("carol")
        self.assertEqual(h.pair(carol), "0/2/*")

    def test_scan_limit_answers_still_looking(self) -> None:
        """Past max_pair_scan shunned players, the asker is told 0/2/*."""
        h = RelayHarness(max_pair_scan=1)
        alice, bob = h.paired("alice", "bob")
        h.unregister(bob)
        self.assertEqual(h.pair(alice), "9/2/*")
        h.key("bob")
        h.key("bob")
        h.key("carol")
        self.assertEqual(h.pair(alice), "0/2/*")
        h2 = RelayHarness(max_pair_scan=2)
        alice, bob = h2.paired("alice", "bob")
        h2.unregister(bob)
        h2.pair(alice)
        h2.key("bob")
        h2.key("bob")
        h2.key("carol")
        self.assertEqual(h2.pair(alice), "0/3/carol")


class NamedPairingTests(TestCase):
    """
    REQUEST_PAIR with a named partner.
    """

    def test_named_pairs_when_both_name_each_other(self) -> None:
        """A and B who named each other are paired; the asker is the server."""
        h = RelayHarness()
        alice = h.key("alice", wanted="bob")
        bob = h.key("bob", wanted="alice")
        self.assertEqual(h.pair(alice), "0/3/bob")
        self.assertEqual(h.pair(bob), "0/4/alice")

    def test_named_waits_for_the_named_player(self) -> None:
        """A named pairing ignores random players and players named otherwise."""
        h = RelayHarness()
        alice = h.key("alice", wanted="bob")
        h.key("bob")  # wants anyone
        h.key("bob", wanted="carol")
        h.key("dave", wanted="alice")
        self.assertEqual(h.pair(alice), "0/2/*")

    def test_named_oldest_first(self) -> None:
        """Of two players with the same name and wish, the older is found."""
        h = RelayHarness()
        first = h.key("bob", wanted="alice")
        h.key("bob", wanted="alice")
        alice = h.key("alice", wanted="bob")
        self.assertEqual(h.pair(alice), "0/3/bob")
        self.assertEqual(h.pair(first), "0/4/alice")

    def test_named_same_name(self) -> None:
        """A player wanting its own name pairs with another, never itself."""
        h = RelayHarness()
        first = h.key("twin", wanted="twin")
        self.assertEqual(h.pair(first), "0/2/*")
        second = h.key("twin", wanted="twin")
        self.assertEqual(h.pair(second), "0/3/twin")
        self.assertEqual(h.pair(first), "0/4/twin")


class HandshakeTests(TestCase):
    """
    MAP_INIT and MAP_READY until the game starts.
    """

    def test_map_init_server_0_5_client_0_6(self) -> None:
        """MAP_INIT answers 0/5/ to the server side and 0/6/ to the client side."""
        h = RelayHarness()
        alice, bob = h.paired()
        self.assertEqual(h.init(bob), "0/5/")
        self.assertEqual(h.init(alice), "0/6/")

    def test_map_init_repeat(self) -> None:
        """MAP_INIT again while loading repeats its reply (a lost reply)."""
        h = RelayHarness()
        alice, bob = h.loading()
        self.assertEqual(h.init(bob), "0/5/")
        self.assertEqual(h.init(alice), "0/6/")

    def test_first_ready_0_7_second_0_8_seat_0_first_0_8_seat_1(self) -> None:
        """First ready gets 0/7/*, second 0/8/<key>|0, first 0/8/<key>|1 next."""
        h = RelayHarness()
        alice, bob = h.loading()
        self.assertEqual(h.ready(alice), "0/7/*")
        self.assertEqual(h.ready(alice), "0/7/*")
        start_bob = re.fullmatch(r"0/8/([A-Za-z0-9]{22})\|0", h.ready(bob))
        start_alice = re.fullmatch(r"0/8/([A-Za-z0-9]{22})\|1", h.ready(alice))
        self.assertIsNotNone(start_bob)
        self.assertIsNotNone(start_alice)
        assert start_bob and start_alice
        self.assertNotEqual(start_bob.group(1), start_alice.group(1))
        self.assertEqual(h.relay.games, 1)

    def test_start_reply_repeats(self) -> None:
        """MAP_READY after the start repeats the same 0/8/ reply."""
        h = RelayHarness()
        alice, bob = h.loading()
        h.ready(alice)
        start = h.ready(bob)
        self.assertEqual(h.ready(bob), start)
        self.assertEqual(h.ready(alice), h.ready(alice))

    def test_ready_while_partner_paired_0_7(self) -> None:
        """Ready before the partner has even sent MAP_INIT is 0/7/*."""
        h = RelayHarness()
        alice, bob = h.paired()
        h.init(alice)
        self.assertEqual(h.ready(alice), "0/7/*")
        h.init(bob)
        self.assertTrue(h.ready(bob).endswith("|0"))

    def test_first_update_retires_pairing_key(self) -> None:
        """After a side's first update its pairing key is unknown (5/*/*)."""
        h = RelayHarness()
        alice, bob = h.loading()
        h.ready(alice)
        h.ready(bob)
        h.ready(alice)
        side = h.start(bob)
        self.assertEqual(h.update(side, "x"), "0/10/*")
        self.assertEqual(h.ready(bob), "5/*/*")
        self.assertTrue(h.ready(alice).startswith("0/8/"))

    def test_no_room_for_game_12(self) -> None:
        """Past max_games, the starting side gets 12/*/*; its partner 9/2/*."""
        h = RelayHarness(max_games=1)
        h.game("a", "b")
        alice, bob = h.loading("alice", "bob")
        self.assertEqual(h.ready(alice), "0/7/*")
        self.assertEqual(h.ready(bob), "12/*/*")
        self.assertEqual(h.ready(bob), "5/*/*")
        self.assertEqual(h.ready(alice), "9/2/*")

    def test_out_of_order_10(self) -> None:
        """A request out of order for the player's state answers 10/*/*."""
        cases = [
            ("waiting", Symbol.MAP_INIT),
            ("waiting", Symbol.MAP_READY),
            ("paired", Symbol.MAP_READY),
            ("loading", Symbol.REQUEST_PAIR),
            ("ready", Symbol.REQUEST_PAIR),
            ("ready", Symbol.MAP_INIT),
            ("playing", Symbol.REQUEST_PAIR),
            ("playing", Symbol.MAP_INIT),
        ]
        for phase, symbol in cases:
            h = RelayHarness()
            key = self._player_in(h, phase)
            self.assertEqual(h.step(symbol, key), "10/*/*", (phase, symbol))
            self.assertEqual(h.pair(key), "5/*/*", (phase, symbol))

    def test_out_of_order_drops_partner_too(self) -> None:
        """The partner of a player dropped for disorder gets 9/2/*."""
        h = RelayHarness()
        alice, bob = h.loading()
        self.assertEqual(h.pair(bob), "10/*/*")
        self.assertEqual(h.ready(alice), "9/2/*")

    def test_out_of_order_in_game_leaves_game(self) -> None:
        """A playing side dropped for disorder leaves its game: partner gets 15."""
        h = RelayHarness()
        alice, bob = h.loading()
        h.ready(alice)
        start = h.ready(bob)
        alice_side = h.start(alice)
        self.assertEqual(h.pair(bob), "10/*/*")
        self.assertEqual(h.update(alice_side, "x"), "15/*/*")
        self.assertTrue(start.startswith("0/8/"))
        self.assertEqual(h.relay.games, 0)

    def _player_in(self, h: RelayHarness, phase: str) -> str:
        if phase == "waiting":
            return h.key("alice")
        alice, bob = h.paired()
        if phase == "paired":
            return bob
        h.init(alice)
        h.init(bob)
        if phase == "loading":
            return bob
        h.ready(bob)
        if phase == "ready":
            return bob
        h.ready(alice)
        return bob


class PartnerDropTests(TestCase):
    """
    A partner dropping before the game starts.
    """

    PHASES = ("paired", "loading", "ready")

    def _to(self, h: RelayHarness, phase: str, alice: str, bob: str) -> None:
        if phase in ("loading", "ready"):
            h.init(alice)
            h.init(bob)
        if phase == "ready":
            h.ready(bob)

    def test_random_partner_drop_9_2_back_to_pool(self) -> None:
        """In every phase, a random partner's drop gives 9/2/* and a new wait."""
        for phase in self.PHASES:
            h = RelayHarness()
            alice, bob = h.paired()
            self._to(h, phase, alice, bob)
            h.unregister(alice)
            self.assertEqual(h.ready(bob), "9/2/*", phase)
            self.assertEqual(h.pair(bob), "0/2/*", phase)
            carol = h.key("carol")
            self.assertEqual(h.pair(carol), "0/3/bob", phase)

    def test_random_partner_timeout_9_2(self) -> None:
        """In every phase, a partner timing out gives 9/2/* to the other."""
        keep_alive = {
            "paired": Symbol.REQUEST_PAIR,
            "loading": Symbol.MAP_INIT,
            "ready": Symbol.MAP_READY,
        }
        for phase, symbol in keep_alive.items():
            h = RelayHarness()
            alice, bob = h.paired()
            self._to(h, phase, alice, bob)
            h.clock.advance(20)
            self.assertTrue(h.step(symbol, bob).startswith("0/"), phase)
            h.clock.advance(5)
            self.assertEqual(h.ready(bob), "9/2/*", phase)

    def test_never_paired_again(self) -> None:
        """After a partner drop, the two names are never paired again."""
        h = RelayHarness()
        alice, bob = h.paired()
        h.unregister(alice)
        self.assertEqual(h.pair(bob), "9/2/*")
        h.key("alice")
        self.assertEqual(h.pair(bob), "0/2/*")
        h.key("carol")
        self.assertEqual(h.pair(bob), "0/3/carol")

    def test_never_paired_again_other_way(self) -> None:
        """Nor is the dropped name found by the shunning player's asks."""
        h = RelayHarness()
        alice, bob = h.paired()
        h.unregister(alice)
        self.assertEqual(h.pair(bob), "9/2/*")
        self.assertEqual(h.pair(h.key("alice")), "0/2/*")

    def test_back_in_pool_at_the_end(self) -> None:
        """A player back in the pool waits behind those already waiting."""
        h = RelayHarness()
        alice, bob = h.paired()
        h.key("carol")
        h.unregister(alice)
        self.assertEqual(h.pair(bob), "9/2/*")
        self.assertEqual(h.pair(h.key("dave")), "0/3/carol")

    def test_shunned_names_bounded(self) -> None:
        """A player remembers at most max_shunned names; the oldest goes first."""
        h = RelayHarness(max_shunned=1)
        bob = h.key("bob")
        for name in ("alice", "carol"):
            other = h.key(name)
            self.assertEqual(h.pair(bob), f"0/3/{name}")
            h.unregister(other)
            self.assertEqual(h.pair(bob), "9/2/*")
        h.key("alice")
        self.assertEqual(h.pair(bob), "0/3/alice")

    def test_named_partner_drop_17(self) -> None:
        """In every phase, a named partner's drop gives 17/*/* and drops it too."""
        for phase in self.PHASES:
            h = RelayHarness()
            alice = h.key("alice", wanted="bob")
            bob = h.key("bob", wanted="alice")
            h.pair(bob)
            h.pair(alice)
            self._to(h, phase, alice, bob)
            h.unregister(alice)
            self.assertEqual(h.pair(bob), "17/*/*", phase)
            self.assertEqual(h.pair(bob), "5/*/*", phase)
            self.assertEqual(h.relay.players, 0)


class GameDataTests(TestCase):
    """
    GAME_UPDATE and the state counter.
    """

    def test_first_update_no_data_0_10(self) -> None:
        """The first update (counter 0) with nothing from the partner is 0/10/*."""
        h = RelayHarness()
        a, _ = h.game()
        self.assertEqual(h.update(a, "hello"), "0/10/*")

    def test_update_returns_partner_data_0_9(self) -> None:
        """An update returns the partner's data since the last one: 0/9/<data>."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "hello")
        self.assertEqual(h.update(b, "hi"), "0/9/hello")
        self.assertEqual(h.update(a, "x"), "0/9/hi")
        self.assertEqual(h.update(a, "y"), "0/10/*")
        self.assertEqual(h.update(b, "z"), "0/9/x|y")

    def test_empty_data_is_a_piece(self) -> None:
        """An update with empty data still counts as the partner sending: 0/9/."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "")
        self.assertEqual(h.update(b, "x"), "0/9/")

    def test_data_with_commas_and_pipes(self) -> None:
        """Data holding commas, pipes and non-ASCII text is relayed verbatim."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "1,2,3|x,y,z|é")
        self.assertEqual(h.update(b, ""), "0/9/1,2,3|x,y,z|é")

    def test_repeat_counter_0_11(self) -> None:
        """A repeated counter returns the missed reply plus anything new: 0/11/."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "p1")
        self.assertEqual(h.update(b, "q1"), "0/9/p1")
        h.update(a, "p2")
        self.assertEqual(h.update(b, "q1", counter=0), "0/11/p1|p2")
        h.update(a, "p3")
        self.assertEqual(h.update(b, "q1", counter=0), "0/11/p1|p2|p3")
        self.assertEqual(h.update(b, "q2"), "0/10/*")

    def test_repeat_counter_does_not_queue_twice(self) -> None:
        """The data sent with a repeated counter is not queued a second time."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "p1")
        h.update(a, "p1", counter=0)
        h.update(a, "p1", counter=0)
        self.assertEqual(h.update(b, ""), "0/9/p1")

    def test_repeat_after_no_data_0_10_then_0_11(self) -> None:
        """Repeating a 0/10/* reply with nothing new is 0/10/*; with new, 0/11/."""
        h = RelayHarness()
        a, b = h.game()
        self.assertEqual(h.update(a, "x"), "0/10/*")
        self.assertEqual(h.update(a, "x", counter=0), "0/10/*")
        h.update(b, "y")
        self.assertEqual(h.update(a, "x", counter=0), "0/11/y")

    def test_counter_behind_18(self) -> None:
        """A counter lower than the last accepted answers 18/*/*, changing nothing."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "p1")
        h.update(a, "p2")
        self.assertEqual(h.update(a, "p3", counter=0), "18/*/*")
        self.assertEqual(h.update(b, ""), "0/9/p1|p2")

    def test_counter_ahead_19(self) -> None:
        """A counter more than one ahead answers 19/*/*; the first must be 0."""
        h = RelayHarness()
        a, b = h.game()
        self.assertEqual(h.update(a, "p", counter=1), "19/*/*")
        h.update(a, "p1")
        self.assertEqual(h.update(a, "p", counter=2), "19/*/*")
        self.assertEqual(h.update(b, ""), "0/9/p1")

    def test_resend_cache_full_21(self) -> None:
        """A repeat whose reply would pass max_cache gets 21/*/<last data>."""
        h = RelayHarness(max_cache=8)
        a, b = h.game()
        h.update(a, "1234")
        self.assertEqual(h.update(b, ""), "0/9/1234")
        h.update(a, "abcd")
        self.assertEqual(h.update(b, "", counter=0), "21/*/1234")
        # The new data stayed queued for the next counter.
        self.assertEqual(h.update(b, ""), "0/9/abcd")

    def test_resend_cache_just_fits(self) -> None:
        """A repeated reply of exactly max_cache bytes still fits: 0/11/."""
        h = RelayHarness(max_cache=9)
        a, b = h.game()
        h.update(a, "1234")
        h.update(b, "")
        h.update(a, "abcd")
        self.assertEqual(h.update(b, "", counter=0), "0/11/1234|abcd")

    def test_resend_cache_full_after_no_data_21_star(self) -> None:
        """A full cache after a 0/10/* reply answers 21/*/*."""
        h = RelayHarness(max_cache=3)
        a, b = h.game()
        self.assertEqual(h.update(b, ""), "0/10/*")
        h.update(a, "abcd")
        self.assertEqual(h.update(b, "", counter=0), "21/*/*")

    def test_queue_limit_lagging_partner_times_out(self) -> None:
        """Past max_queue pending bytes, the lagging partner is out of the game."""
        h = RelayHarness(max_queue=9)
        a, b = h.game()
        h.update(b, "hi")
        self.assertEqual(h.update(a, "1234"), "0/9/hi")
        self.assertEqual(h.update(a, "5678"), "0/10/*")
        self.assertEqual(h.update(a, "9"), "15/*/*")
        self.assertEqual(h.update(b, ""), "13/*/*")
        self.assertEqual(h.relay.games, 0)

    def test_queue_limit_counts_utf8_bytes(self) -> None:
        """The queue limit counts UTF-8 bytes, not characters."""
        h = RelayHarness(max_queue=4)
        a, b = h.game()
        h.update(a, "éé")
        self.assertEqual(h.update(b, ""), "0/9/éé")
        h.update(a, "ééé")
        self.assertEqual(h.update(b, ""), "13/*/*")


class QuitTests(TestCase):
    """
    GAME_QUIT and the end of a game.
    """

    def test_quit_partner_gets_last_data_then_15(self) -> None:
        """The partner gets the quitter's last data, then 15/*/*."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "p1")
        self.assertEqual(h.update(a, "bye", quit=True), "0/10/*")
        self.assertEqual(h.update(b, "q1"), "0/9/p1|bye")
        self.assertEqual(h.update(b, "q1", counter=0), "0/11/p1|bye")
        self.assertEqual(h.update(b, "q2"), "15/*/*")
        self.assertEqual(h.relay.games, 0)

    def test_quit_reply_carries_partner_data(self) -> None:
        """A quit is an update: it returns the partner's pending data."""
        h = RelayHarness()
        a, b = h.game()
        h.update(b, "q1")
        self.assertEqual(h.update(a, "bye", quit=True), "0/9/q1")

    def test_quitter_key_is_ended_13(self) -> None:
        """After quitting, the quitter's game key answers 13/*/*."""
        h = RelayHarness()
        a, _ = h.game()
        h.update(a, "bye", quit=True)
        self.assertEqual(h.update(a, "x"), "13/*/*")
        self.assertEqual(h.update(a, "x", counter=0), "13/*/*")

    def test_both_quit_ends_game(self) -> None:
        """When both have quit the game is gone and both keys answer 13/*/*."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "bye-a", quit=True)
        self.assertEqual(h.update(b, "bye-b", quit=True), "0/9/bye-a")
        self.assertEqual(h.relay.games, 0)
        self.assertEqual(h.update(a, ""), "13/*/*")
        self.assertEqual(h.update(b, ""), "13/*/*")

    def test_quit_drops_data_sent_to_quitter(self) -> None:
        """Data sent to a player who has quit is not kept."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "bye", quit=True)
        h.update(b, "lost")
        self.assertEqual(h.update(b, "x"), "15/*/*")

    def test_unregister_in_game_leaves_game(self) -> None:
        """UNREGISTER with a pairing key still held in a game leaves the game."""
        h = RelayHarness()
        alice, bob = h.loading()
        h.ready(alice)
        h.ready(bob)
        side = h.start(alice)
        self.assertEqual(h.unregister(bob), "0/1/*")
        self.assertEqual(h.update(side, "x"), "15/*/*")

    def test_other_players_key_13(self) -> None:
        """A game key with the other seat, or a pairing key, answers 13/*/*."""
        h = RelayHarness()
        a, b = h.game()
        h.update(b, "secret")
        self.assertEqual(h.update(Side(a.key, b.seat), ""), "13/*/*")
        self.assertEqual(h.update(Side(h.key("carol"), 0), ""), "13/*/*")
        self.assertEqual(h.update(Side("x" * 22, 0), ""), "13/*/*")
        self.assertEqual(h.update(a, ""), "0/9/secret")


def held(*pieces: str) -> int:
    """
    The memory the relay counts for C{pieces}.
    """
    return sum(map(held_size, pieces))


class DataBudgetTests(TestCase):
    """
    max_data: the memory all game data may hold together.
    """

    def test_piece_counts_its_memory(self) -> None:
        """A piece counts its string's memory and a list slot, not its UTF-8 bytes."""
        self.assertEqual(held_size("ab"), sys.getsizeof("ab") + 8)
        self.assertGreater(held_size(""), 8)
        self.assertGreater(held_size("\U0001f600" * 10), held_size("a" * 40))

    def test_total_follows_updates_repeats_and_quits(self) -> None:
        """The total counts every queued and cached piece, and ends at 0."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "p1")
        self.assertEqual(h.relay.data_bytes, held("p1"))
        self.assertEqual(h.update(b, "q1"), "0/9/p1")
        self.assertEqual(h.relay.data_bytes, held("p1", "q1"))
        self.assertEqual(h.update(b, "q1", counter=0), "0/11/p1")
        self.assertEqual(h.relay.data_bytes, held("p1", "q1"))
        h.update(a, "p2")
        self.assertEqual(h.relay.data_bytes, held("p1", "q1", "p2"))
        self.assertEqual(h.update(b, "q1", counter=0), "0/11/p1|p2")
        self.assertEqual(h.relay.data_bytes, held("p1", "q1", "p2"))
        self.assertEqual(h.update(b, ""), "0/10/*")
        self.assertEqual(h.relay.data_bytes, held("q1", ""))
        self.assertEqual(h.update(a, "bye", quit=True), "0/9/")
        self.assertEqual(h.relay.data_bytes, held("bye"))
        self.assertEqual(h.update(b, ""), "0/9/bye")
        self.assertEqual(h.update(b, ""), "15/*/*")
        self.assertEqual((h.relay.games, h.relay.data_bytes), (0, 0))

    def test_total_freed_when_side_unregisters(self) -> None:
        """A side leaving the game by UNREGISTER frees the data queued for it."""
        h = RelayHarness()
        alice, bob = h.loading()
        h.ready(alice)
        h.ready(bob)
        side = h.start(alice)
        h.update(side, "to-bob")
        h.update(side, "more")
        self.assertEqual(h.relay.data_bytes, held("to-bob", "more"))
        self.assertEqual(h.unregister(bob), "0/1/*")
        self.assertEqual((h.relay.games, h.relay.data_bytes), (1, 0))
        self.assertEqual(h.update(side, "x"), "15/*/*")
        self.assertEqual((h.relay.games, h.relay.data_bytes), (0, 0))

    def test_total_freed_by_timeout(self) -> None:
        """Sides that time out free everything they held."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "p1")
        h.update(b, "q1")
        h.update(a, "p2")
        h.clock.advance(30)
        self.assertEqual((h.relay.games, h.relay.data_bytes), (0, 0))

    def test_total_freed_by_lag_drop(self) -> None:
        """A partner dropped for lagging frees its queue and cache."""
        h = RelayHarness(max_queue=9)
        a, b = h.game()
        h.update(b, "hi")
        h.update(a, "1234")
        h.update(a, "5678")
        self.assertEqual(h.update(a, "9"), "15/*/*")
        self.assertEqual((h.relay.games, h.relay.data_bytes), (0, 0))

    def test_over_budget_503_nothing_applied(self) -> None:
        """An update past max_data gets 22/*/*; counter, queue and cache stay."""
        h = RelayHarness(max_data=held("1234", "", "5678"))
        a, b = h.game()
        h.update(a, "1234")
        h.update(b, "")
        self.assertEqual(h.update(a, "5678"), "0/9/")
        self.assertEqual(h.relay.data_bytes, h.relay.config.max_data)
        self.assertEqual(h.update(a, "9abc"), "22/*/*")
        self.assertEqual(h.relay.data_bytes, h.relay.config.max_data)
        self.assertEqual(a.counter, 2)
        # The cache is untouched: a repeat still gets the last reply.
        self.assertEqual(h.update(a, "5678", counter=1), "0/11/")
        # Nothing was queued: the partner gets only what came before.
        self.assertEqual(h.update(b, ""), "0/9/5678")
        self.assertEqual(h.update(b, "", counter=1), "0/11/5678")

    def test_same_request_succeeds_once_partner_reads(self) -> None:
        """Refused at the budget, the same update is applied once the partner read."""
        h = RelayHarness(max_data=held("1234", "", "5678"))
        a, b = h.game()
        h.update(a, "1234")
        h.update(b, "")
        h.update(a, "5678")
        self.assertEqual(h.update(a, "9abc"), "22/*/*")
        # The partner's read frees its previous reply's pieces.
        self.assertEqual(h.update(b, ""), "0/9/5678")
        self.assertEqual(h.update(a, "9abc"), "0/9/")
        self.assertEqual(h.update(b, ""), "0/9/9abc")
        self.assertLessEqual(h.relay.data_bytes, h.relay.config.max_data)

    def test_repeat_allowed_over_budget(self) -> None:
        """A repeated counter at a full budget still resends, old and new data."""
        h = RelayHarness(max_data=held("p1", "q", "p2"))
        a, b = h.game()
        h.update(a, "p1")
        h.update(b, "q")
        h.update(a, "p2")
        self.assertEqual(h.update(a, "p3"), "22/*/*")
        self.assertEqual(h.update(b, "q", counter=0), "0/11/p1|p2")
        self.assertEqual(h.relay.data_bytes, h.relay.config.max_data)

    def test_empty_pieces_count(self) -> None:
        """Empty pieces count their memory, so a flood of them hits the budget."""
        h = RelayHarness(max_data=held(*[""] * 10))
        a, _ = h.game()
        for _ in range(10):
            self.assertEqual(h.update(a, ""), "0/10/*")
        self.assertEqual(h.update(a, ""), "22/*/*")

    def test_quit_over_budget_503_then_applied(self) -> None:
        """A quit past the budget gets 22/*/* and stays in the game until it fits."""
        h = RelayHarness(max_data=held("1234", ""))
        a, b = h.game()
        h.update(a, "1234")
        h.update(b, "")
        self.assertEqual(h.update(a, "bye", quit=True), "22/*/*")
        # The partner's next update frees its cache ("1234").
        self.assertEqual(h.update(b, ""), "0/10/*")
        self.assertEqual(h.update(a, "bye", quit=True), "0/9/|")
        self.assertEqual(h.update(b, ""), "0/9/bye")
        self.assertEqual(h.update(b, ""), "15/*/*")
        self.assertEqual((h.relay.games, h.relay.data_bytes), (0, 0))

    def test_refused_update_does_not_refresh_timeout(self) -> None:
        """A side whose updates are all refused times out like a silent one."""
        h = RelayHarness(max_data=held("1234"))
        a, b = h.game()
        h.update(a, "1234")
        h.clock.advance(20)
        self.assertEqual(h.update(a, "5678"), "22/*/*")
        h.update(b, "", counter=5)  # 19/*/*, keeps b alive
        h.clock.advance(10)
        self.assertEqual(h.update(a, "5678"), "13/*/*")
        self.assertEqual(h.update(b, ""), "0/9/1234")
        self.assertEqual(h.relay.data_bytes, held("1234"))


class TimeoutTests(TestCase):
    """
    Every timeout, just before and just after it falls due.
    """

    def test_pairing_timeout_25(self) -> None:
        """A waiting player is kept at 24.9 s of silence and dropped at 25 s."""
        h = RelayHarness()
        key = h.key("alice")
        h.clock.advance(24.9)
        self.assertEqual(h.pair(key), "0/2/*")
        h.clock.advance(24.9)
        self.assertEqual(h.relay.players, 1)
        h.clock.advance(0.1)
        self.assertEqual(h.pair(key), "5/*/*")

    def test_pairing_timeout_exact_at_request(self) -> None:
        """Expiry is exact when a request comes: dropped at 25 s even untimed."""
        h = RelayHarness()
        key = h.key("alice")
        h.clock.rightNow = 25.0  # no timer has run yet
        self.assertEqual(h.pair(key), "5/*/*")

    def test_pairing_timer_drops_without_requests(self) -> None:
        """The reactor timer drops a silent player with no request coming."""
        h = RelayHarness()
        h.key("alice")
        h.clock.advance(25)
        self.assertEqual(len(h.relay._players), 0)
        self.assertEqual(len(h.relay._pool), 0)

    def test_long_wait_180(self) -> None:
        """The bibbybabbis register key keeps a player 179.9 s, drops it at 180 s."""
        h = RelayHarness()
        key = h.key("alice", long_wait=True)
        h.clock.advance(179.9)
        self.assertEqual(h.pair(key), "0/2/*")
        h.clock.advance(179.9)
        self.assertEqual(h.relay.players, 1)
        h.clock.advance(0.1)
        self.assertEqual(h.pair(key), "5/*/*")

    def test_handshake_timeout_25(self) -> None:
        """A player in the handshake is dropped after 25 s of silence."""
        h = RelayHarness()
        alice, bob = h.loading()
        h.clock.advance(24.9)
        self.assertEqual(h.ready(alice), "0/7/*")
        h.clock.advance(0.1)
        self.assertEqual(h.ready(bob), "5/*/*")
        self.assertEqual(h.ready(alice), "9/2/*")

    def test_game_timeout_30(self) -> None:
        """A game nobody talks in is kept at 29.9 s and ended at 30 s."""
        h = RelayHarness()
        a, b = h.game()
        h.clock.advance(29.9)
        self.assertEqual(h.relay.games, 1)
        h.clock.advance(0.1)
        self.assertEqual(h.relay.games, 0)
        self.assertEqual(h.update(a, ""), "13/*/*")
        self.assertEqual(h.update(b, ""), "13/*/*")

    def test_game_timeout_refreshed_by_updates(self) -> None:
        """Each side's update restarts its 30 s."""
        h = RelayHarness()
        a, b = h.game()
        h.clock.advance(29.9)
        self.assertEqual(h.update(a, "x"), "0/10/*")
        self.assertEqual(h.update(b, "y"), "0/9/x")
        h.clock.advance(29.9)
        self.assertEqual(h.update(a, ""), "0/9/y")

    def test_game_timer_ends_game_without_requests(self) -> None:
        """The reactor timer ends a silent game with no request coming."""
        h = RelayHarness()
        h.game()
        h.clock.advance(30)
        self.assertEqual(h.relay._table.count, 0)

    def test_silent_side_times_out_15(self) -> None:
        """A side silent for 30 s times out: its partner then gets 15/*/*."""
        h = RelayHarness()
        a, b = h.game()
        h.update(a, "last")
        h.clock.advance(10)
        self.assertEqual(h.update(b, ""), "0/9/last")
        h.clock.advance(19.9)
        self.assertEqual(h.update(b, ""), "0/10/*")
        h.clock.advance(0.1)
        self.assertEqual(h.update(b, ""), "15/*/*")
        self.assertEqual(h.update(a, ""), "13/*/*")
        self.assertEqual(h.relay.games, 0)

    def test_silent_side_data_still_delivered(self) -> None:
        """Data a side sent before timing out is still delivered to its partner."""
        h = RelayHarness()
        a, b = h.game()
        h.clock.advance(20)
        h.update(b, "")
        h.update(a, "last")
        h.clock.advance(20)
        self.assertEqual(h.update(b, "", counter=9), "19/*/*")  # keeps b alive
        h.clock.advance(10)
        self.assertEqual(h.update(b, ""), "0/9/last")
        self.assertEqual(h.update(b, ""), "15/*/*")

    def test_repeat_keeps_side_alive(self) -> None:
        """Repeated and rejected counters count as talking for the game timeout."""
        h = RelayHarness()
        a, b = h.game()
        for counter in (0, 5, 0):
            h.clock.advance(20)
            h.update(a, "", counter=counter)
            h.update(b, "", counter=counter)
        self.assertEqual(h.relay.games, 1)

    def test_pairing_key_of_started_game_times_out(self) -> None:
        """A side that never updates loses its pairing key after 25 s."""
        h = RelayHarness()
        alice, bob = h.loading()
        h.ready(alice)
        h.ready(bob)
        h.clock.advance(25)
        self.assertEqual(h.relay.players, 0)
        self.assertEqual(h.ready(alice), "5/*/*")
        self.assertEqual(h.relay.games, 1)

    def test_stop_cancels_timers(self) -> None:
        """stop() leaves no pending timer behind."""
        h = RelayHarness()
        h.game()
        h.key("a")
        h.relay.stop()
        self.assertEqual(h.clock.getDelayedCalls(), [])


class ApiTests(TestCase):
    """
    The domain's own types.
    """

    def test_reply_success(self) -> None:
        """Reply.success builds 0/<code>/<payload>, '*' when nothing."""
        self.assertEqual(text(Reply.success(Code.LOOKING)), "0/2/*")
        self.assertTrue(Reply.success(Code.GAME_DATA, "x").ok)
        self.assertFalse(Errors.TOO_LONG.ok)

    def test_config_rejects_bad_values(self) -> None:
        """RelayConfig refuses non-positive timeouts and limits."""
        self.assertRaises(ValueError, RelayConfig, pairing_timeout=0.0)
        self.assertRaises(ValueError, RelayConfig, game_timeout=-1.0)
        self.assertRaises(ValueError, RelayConfig, max_players=0)
        self.assertRaises(ValueError, RelayConfig, max_cache=0)
        self.assertRaises(ValueError, RelayConfig, max_data=0)
        self.assertRaises(ValueError, RelayConfig, max_pair_scan=-1)

    def test_default_config(self) -> None:
        """The defaults are the spec's: 25 s, 180 s, 30 s, 131072-byte bounds."""
        config = Relay(RelayHarness().clock).config
        self.assertEqual(
            (config.pairing_timeout, config.long_wait_timeout, config.game_timeout),
            (25.0, 180.0, 30.0),
        )
        self.assertEqual((config.max_cache, config.max_queue), (131_072, 131_072))
        self.assertEqual(config.max_data, 256 * 1024 * 1024)

    def test_unknown_pairing_symbol_10(self) -> None:
        """A pairing step with a game symbol is out of order: 10/*/*."""
        h = RelayHarness()
        key = h.key("alice")
        reply = h.relay.handle(PairingStep(Symbol.GAME_UPDATE, key))
        self.assertEqual(text(reply), "10/*/*")
        self.assertEqual(text(h.relay.handle(GameStep(key, 0, 0, "", False))), "13/*/*")


class WaitingLineTests(TestCase):
    """
    The random pool's line: order, lazy removal, and bounded memory.
    """

    def test_rejoin_goes_to_the_back_while_old_entry_remains(self) -> None:
        """A player back in the pool is found after those already waiting, even
        while its stale older entry is still ahead of them in the line."""
        h = RelayHarness()
        x, _, z = h.key("x"), h.key("y"), h.key("z")
        self.assertEqual(h.pair(z), "0/3/x")  # z's entry stays behind y's
        h.key("u")
        h.unregister(x)
        self.assertEqual(h.pair(z), "9/2/*")  # z joins again, behind u
        self.assertEqual(len(h.relay._pool._entries), 4)  # y, z (stale), u, z
        self.assertEqual(h.pair(h.key("w")), "0/3/y")
        self.assertEqual(h.pair(h.key("v")), "0/3/u")
        self.assertEqual(h.pair(h.key("t")), "0/3/z")

    def test_line_memory_follows_who_waits(self) -> None:
        """Pairing and dropping thousands of players leaves the line no longer
        than twice the waiting players plus a constant."""
        h = RelayHarness()
        for i in range(3000):
            h.pair(h.key(f"a{i}"))  # the second of each two finds the first
        line = h.relay._pool
        self.assertEqual(len(line), 0)
        self.assertLessEqual(len(line._entries), 1024)
        waiting = [h.key(f"w{i}") for i in range(10)]
        self.assertEqual(len(line), 10)
        self.assertEqual([p.name for p in line], [f"w{i}" for i in range(10)])
        del waiting
