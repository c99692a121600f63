"""
Strict parsing of the 31-bit unsigned decimal numbers of the wire contract.
"""

MAX = 2**31 - 1

# Ten digits hold every value up to MAX; longer strings (after leading zeros)
# are out of range, and rejecting them early keeps int() away from huge input.
_MAX_DIGITS = len(str(MAX))


def parse(raw: bytes) -> int | None:
    """
    Return the value of C{raw} if it is one or more ASCII digits worth at most
    L{MAX}, else L{None}.

    C{bytes.isdigit} only accepts ASCII 0-9, so signs, spaces, underscores,
    fractions and non-ASCII digits are all refused.
    """
    if not raw.isdigit():
        return None
    digits = raw.lstrip(b"0")
    if len(digits) > _MAX_DIGITS:
        return None
    value = int(digits or b"0")
    return value if value <= MAX else None
