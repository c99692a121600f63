"""
Tests for L{gameserver.relay_wire}: request bodies in, reply bodies out.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from gameserver.relay import (
    Code,
    Errors,
    GameStep,
    PairingStep,
    Register,
    Reply,
    Symbol,
)
from gameserver.relay_wire import format_reply, parse_request


class ParseTests(TestCase):
    """
    L{parse_request}.
    """

    def test_register(self) -> None:
        """C{0,<name>,*,*,*} registers <name> for random pairing."""
        self.assertEqual(parse_request(b"0,alice,*,*,*"), Register("alice", None))

    def test_register_named(self) -> None:
        """The player field of REGISTER names the one partner wanted."""
        self.assertEqual(parse_request(b"0,alice,*,bob,*"), Register("alice", "bob"))

    def test_register_long_wait(self) -> None:
        """The register key bibbybabbis asks for the long wait."""
        self.assertEqual(
            parse_request(b"0,alice,bibbybabbis,*,*"),
            Register("alice", None, long_wait=True),
        )

    def test_register_bad_key_4_3(self) -> None:
        """REGISTER with a key other than * or bibbybabbis is 4/3/*."""
        for key in (b"", b"x", b"**", b"Bibbybabbis", b"15"):
            self.assertEqual(
                parse_request(b"0,alice," + key + b",*,*"), Errors.BAD_REGISTER_KEY
            )

    def test_pairing_steps(self) -> None:
        """Symbols 1 to 4 carry a pairing key; data, player and counter unused."""
        for number in range(1, 5):
            body = b"%d,whatever,KEY,x,y" % number
            self.assertEqual(parse_request(body), PairingStep(Symbol(number), "KEY"))

    def test_game_update(self) -> None:
        """Symbol 6 is an update with game key, seat and counter."""
        self.assertEqual(
            parse_request(b"6,data,GK,1,42"), GameStep("GK", 1, 42, "data", False)
        )

    def test_game_quit(self) -> None:
        """Symbol 5 is an update that quits."""
        self.assertEqual(
            parse_request(b"5,bye,GK,0,0"), GameStep("GK", 0, 0, "bye", True)
        )

    def test_data_holds_commas_and_pipes(self) -> None:
        """Data is everything between the first and the third-from-last comma."""
        self.assertEqual(
            parse_request(b"6,a,b,,c|d,GK,0,3"), GameStep("GK", 0, 3, "a,b,,c|d")
        )
        self.assertEqual(parse_request(b"0,x,y,*,*,*"), Register("x,y"))

    def test_empty_data(self) -> None:
        """Empty data is data."""
        self.assertEqual(parse_request(b"6,,GK,0,0"), GameStep("GK", 0, 0, ""))

    def test_utf8_data(self) -> None:
        """Data and names are UTF-8 text."""
        self.assertEqual(
            parse_request("0,Zoë 🎲,*,*,*".encode()), Register("Zoë 🎲", None)
        )

    def test_not_utf8_2(self) -> None:
        """A body that is not UTF-8 is 2/*/*."""
        self.assertEqual(parse_request(b"0,\xff,*,*,*"), Errors.NOT_UTF8)

    def test_no_length_1(self) -> None:
        """A body whose length the channel could not tell is 1/*/*."""
        self.assertEqual(parse_request(None), Errors.BAD_LENGTH)

    def test_too_few_fields_4_0(self) -> None:
        """Fewer than five fields is 4/0/*."""
        for body in (b"", b"0", b"0,", b"0,alice,*,*", b"6,GK,0,1", b",,,"):
            self.assertEqual(parse_request(body), Errors.BAD_SYMBOL, body)

    def test_bad_symbol_4_0(self) -> None:
        """A symbol that is not 0 to 6 in decimal digits is 4/0/*."""
        for symbol in (b"7", b"-1", b"+1", b"a", b"", b"1.0", b"0x1", b"\xd9\xa3"):
            self.assertEqual(
                parse_request(symbol + b",x,*,*,*"), Errors.BAD_SYMBOL, symbol
            )

    def test_bad_player_4_1(self) -> None:
        """A game request whose player is not 0 or 1 is 4/1/*."""
        for player in (b"2", b"*", b"", b"-1", b"01x", b"a"):
            self.assertEqual(
                parse_request(b"6,x,GK," + player + b",0"), Errors.BAD_PLAYER, player
            )

    def test_bad_counter_4_2(self) -> None:
        """A game request whose counter is not a non-negative integer is 4/2/*."""
        for counter in (b"-1", b"*", b"", b"1.5", b"+1", b"2147483648", b"1e3"):
            self.assertEqual(
                parse_request(b"6,x,GK,0," + counter), Errors.BAD_COUNTER, counter
            )

    def test_check_order(self) -> None:
        """Symbol is checked before player, and player before counter."""
        self.assertEqual(parse_request(b"9,x,GK,7,-1"), Errors.BAD_SYMBOL)
        self.assertEqual(parse_request(b"6,x,GK,7,-1"), Errors.BAD_PLAYER)

    def test_numbers_allow_surrounding_whitespace(self) -> None:
        """Like the seed's int(), numbers may carry spaces or a final newline."""
        self.assertEqual(
            parse_request(b" 6 ,d,GK , 1 ,7\r\n"), GameStep("GK", 1, 7, "d")
        )
        self.assertEqual(
            parse_request(b"2,*,KEY,*,*\n"), PairingStep(Symbol.REQUEST_PAIR, "KEY")
        )

    def test_leading_zeros(self) -> None:
        """Numbers with leading zeros are the same numbers."""
        self.assertEqual(parse_request(b"06,d,GK,01,007"), GameStep("GK", 1, 7, "d"))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=64))
    def test_any_bytes_parse(self, body: bytes) -> None:
        """Any body parses to a request or to an error reply, never raises."""
        result = parse_request(body)
        self.assertIsInstance(result, Register | PairingStep | GameStep | Reply)

    @settings(max_examples=200, deadline=None)
    @given(
        st.text(max_size=20),
        st.integers(0, 1),
        st.integers(0, 2**31 - 1),
    )
    def test_data_round_trip(self, data: str, seat: int, counter: int) -> None:
        """Any text as data comes back exactly as it was sent."""
        body = f"6,{data},GK,{seat},{counter}".encode()
        self.assertEqual(parse_request(body), GameStep("GK", seat, counter, data))


class FormatTests(TestCase):
    """
    L{format_reply}.
    """

    def test_success(self) -> None:
        """Success replies are 0/<code>/<payload>."""
        self.assertEqual(format_reply(Reply.success(Code.REGISTERED, "K")), b"0/0/K")
        self.assertEqual(format_reply(Reply.success(Code.LOOKING)), b"0/2/*")
        self.assertEqual(format_reply(Reply.success(Code.INIT_SERVER, "")), b"0/5/")
        self.assertEqual(
            format_reply(Reply.success(Code.START_PLAY, "GK|1")), b"0/8/GK|1"
        )
        self.assertEqual(
            format_reply(Reply.success(Code.GAME_DATA, "é|,")), "0/9/é|,".encode()
        )

    def test_error_bodies(self) -> None:
        """Every error body is exactly as in the spec's error table."""
        expected = {
            Errors.BAD_LENGTH: b"1/*/*",
            Errors.NOT_UTF8: b"2/*/*",
            Errors.BAD_SYMBOL: b"4/0/*",
            Errors.BAD_PLAYER: b"4/1/*",
            Errors.BAD_COUNTER: b"4/2/*",
            Errors.BAD_REGISTER_KEY: b"4/3/*",
            Errors.UNKNOWN_PAIRING_KEY: b"5/*/*",
            Errors.PARTNER_DROPPED: b"9/2/*",
            Errors.OUT_OF_ORDER: b"10/*/*",
            Errors.POOL_FULL: b"11/*/*",
            Errors.NO_ROOM_FOR_GAME: b"12/*/*",
            Errors.UNKNOWN_GAME_KEY: b"13/*/*",
            Errors.PARTNER_LEFT: b"15/*/*",
            Errors.NAMED_PARTNER_DROPPED: b"17/*/*",
            Errors.COUNTER_BEHIND: b"18/*/*",
            Errors.COUNTER_AHEAD: b"19/*/*",
            Errors.TOO_LONG: b"20/*/*",
            Errors.cache_full("a|b"): b"21/*/a|b",
        }
        for reply, body in expected.items():
            self.assertEqual(format_reply(reply), body)
            self.assertFalse(reply.ok)
