"""
Tests for L{gameserver.uint31}: the contract's "Numbers" section.
"""

from twisted.trial.unittest import TestCase

from gameserver import uint31


class ParseTests(TestCase):
    """
    Strict parsing of 31-bit unsigned decimal numbers.
    """

    def test_plain_digits(self) -> None:
        """Decimal ASCII digits give their value."""
        self.assertEqual(uint31.parse(b"4711"), 4711)

    def test_zero(self) -> None:
        """Zero is a valid number."""
        self.assertEqual(uint31.parse(b"0"), 0)

    def test_leading_zeros(self) -> None:
        """Leading zeros are accepted: 007 is 7."""
        self.assertEqual(uint31.parse(b"007"), 7)
        self.assertEqual(uint31.parse(b"0" * 50 + b"1"), 1)

    def test_maximum(self) -> None:
        """2147483647 is the largest valid value."""
        self.assertEqual(uint31.parse(b"2147483647"), 2**31 - 1)

    def test_above_maximum(self) -> None:
        """2147483648 and above are invalid."""
        for raw in (b"2147483648", b"4294967296", b"99999999999", b"9" * 5000):
            self.assertIsNone(uint31.parse(raw), raw[:20])

    def test_invalid_forms(self) -> None:
        """Signs, fractions, exponents, underscores, spaces, empty strings and
        non-ASCII digits are invalid."""
        for raw in (
            b"+5",
            b"-5",
            b"1.5",
            b"1e3",
            b"1_000",
            "\u0663".encode(),
            b" 5",
            b"5 ",
            b"",
            b"0x10",
            b"5\x00",
        ):
            self.assertIsNone(uint31.parse(raw), raw)
