"""
Unguessable keys made of ASCII letters and digits.
"""

import os

ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE = len(ALPHABET)
_VALUES = {c: i for i, c in enumerate(ALPHABET)}

# 16 random bytes are 128 bits; 22 base-62 digits hold any 128-bit number.
RANDOM_BYTES = 16
RANDOM_KEY_LENGTH = 22


def encode(number: int, length: int) -> bytes:
    """
    Write C{number} in base 62 with exactly C{length} digits, zero-padded.
    """
    out = bytearray(length)
    for i in range(length - 1, -1, -1):
        number, digit = divmod(number, _BASE)
        out[i] = ALPHABET[digit]
    if number:
        raise ValueError("number does not fit in length")
    return bytes(out)


def decode(text: bytes) -> int | None:
    """
    Read a base-62 number, or return L{None} if C{text} holds another byte.
    """
    number = 0
    values = _VALUES
    for c in text:
        value = values.get(c)
        if value is None:
            return None
        number = number * _BASE + value
    return number


def random_key() -> bytes:
    """
    A fresh key of 128 bits from the operating system's CSPRNG.
    """
    return encode(int.from_bytes(os.urandom(RANDOM_BYTES), "big"), RANDOM_KEY_LENGTH)
