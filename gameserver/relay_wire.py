"""
The relay protocol's wire format: request bodies in, reply bodies out.

A request body is UTF-8 text C{<symbol>,<data>,<key>,<player>,<counter>}.
C{<data>} is everything between the first comma and the third-from-last
comma, so it may hold commas (and C{|}); the other fields cannot.
"""

from typing import Final

from gameserver import uint31
from gameserver.relay import (
    LONG_WAIT_KEY,
    NOTHING,
    Errors,
    GameStep,
    PairingStep,
    Register,
    Reply,
    Request,
    Symbol,
)

# The seed's server read numbers with int(), which allows surrounding
# whitespace (a trailing newline, say); keep accepting that, nothing more.
_BLANKS: Final = " \t\r\n"
_TRAILING_FIELDS: Final = 3


def parse_request(body: bytes | None) -> Request | Reply:
    """
    Parse a request body into a request, or into the error reply for it.

    @param body: the body, or L{None} when the channel could not tell its
        length.
    """
    if body is None:
        return Errors.BAD_LENGTH
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Errors.NOT_UTF8
    head, comma, rest = text.partition(",")
    fields = rest.rsplit(",", _TRAILING_FIELDS)
    if not comma or len(fields) <= _TRAILING_FIELDS:
        return Errors.BAD_SYMBOL
    data, key, player, counter = fields
    number = _number(head)
    if number is None or number > max(Symbol):
        return Errors.BAD_SYMBOL
    symbol = Symbol(number)
    if symbol in (Symbol.GAME_QUIT, Symbol.GAME_UPDATE):
        seat = _number(player)
        if seat not in (0, 1):
            return Errors.BAD_PLAYER
        assert seat is not None
        count = _number(counter)
        if count is None:
            return Errors.BAD_COUNTER
        return GameStep(
            key.strip(_BLANKS), seat, count, data, symbol is Symbol.GAME_QUIT
        )
    if symbol is Symbol.REGISTER:
        if key not in (NOTHING, LONG_WAIT_KEY):
            return Errors.BAD_REGISTER_KEY
        wanted = None if player == NOTHING else player
        return Register(data, wanted, key == LONG_WAIT_KEY)
    return PairingStep(symbol, key.strip(_BLANKS))


def _number(field: str) -> int | None:
    """
    A decimal number of ASCII digits up to 2**31-1, or L{None}.
    """
    return uint31.parse(field.strip(_BLANKS).encode("utf-8"))


def format_reply(reply: Reply) -> bytes:
    """
    The body of a reply: C{<status>/<code>/<payload>}.
    """
    return f"{reply.status}/{reply.code}/{reply.payload}".encode()
