"""
Tests for L{gameserver.leaderboard}: the contract's high-score list rules.
"""

from twisted.trial.unittest import TestCase

from gameserver.leaderboard import LIST_LENGTH, Leaderboards


def users(body: bytes) -> list[bytes]:
    """
    The user ids of a list body, in order.
    """
    return [entry.partition(b"=")[0] for entry in body.split(b",")]


class LeaderboardTests(TestCase):
    """
    Best score per user, top 15, ties to whoever reached the score first.
    """

    def test_seed_example(self) -> None:
        """The seed's example list reads 4711=1500,131=1220."""
        boards = Leaderboards()
        boards.record(2, 4711, 1500)
        boards.record(2, 131, 1220)
        self.assertEqual(boards.body(2), b"4711=1500,131=1220")

    def test_empty_level(self) -> None:
        """A level with no scores has an empty body and is not created."""
        boards = Leaderboards()
        self.assertEqual(boards.body(7), b"")
        self.assertEqual(len(boards), 0)

    def test_best_score_per_user(self) -> None:
        """A lower or equal later score changes nothing; a higher one replaces."""
        boards = Leaderboards()
        self.assertTrue(boards.record(1, 5, 100))
        self.assertFalse(boards.record(1, 5, 90))
        self.assertFalse(boards.record(1, 5, 100))
        self.assertEqual(boards.body(1), b"5=100")
        self.assertTrue(boards.record(1, 5, 120))
        self.assertEqual(boards.body(1), b"5=120")

    def test_highest_first(self) -> None:
        """Entries are ordered by score, highest first."""
        boards = Leaderboards()
        for user, score in ((1, 10), (2, 30), (3, 20)):
            boards.record(1, user, score)
        self.assertEqual(boards.body(1), b"2=30,3=20,1=10")

    def test_top_fifteen(self) -> None:
        """At most 15 entries are listed, the best ones."""
        boards = Leaderboards()
        for user in range(40):
            boards.record(1, user, user * 10)
        body = boards.body(1).split(b",")
        self.assertEqual(len(body), LIST_LENGTH)
        self.assertEqual(body[0], b"39=390")
        self.assertEqual(body[-1], b"25=250")

    def test_ties_first_reached_first(self) -> None:
        """Among equal scores, the user who reached the score first comes first."""
        boards = Leaderboards()
        boards.record(1, 9, 50)
        boards.record(1, 3, 50)
        boards.record(1, 7, 40)
        boards.record(1, 7, 50)
        self.assertEqual(boards.body(1), b"9=50,3=50,7=50")

    def test_tie_with_last_entry_stays_out(self) -> None:
        """On a full list, reaching the last entry's score does not enter it."""
        boards = Leaderboards()
        for user in range(LIST_LENGTH):
            boards.record(1, user, 100)
        self.assertFalse(boards.record(1, 99, 100))
        self.assertNotIn(b"99", users(boards.body(1)))

    def test_dropped_user_returns_with_better_score(self) -> None:
        """A user pushed off the list comes back when they beat the last entry."""
        boards = Leaderboards()
        boards.record(1, 0, 5)
        for user in range(1, LIST_LENGTH + 1):
            boards.record(1, user, 10)
        self.assertNotIn(b"0", users(boards.body(1)))
        boards.record(1, 0, 11)
        self.assertTrue(boards.body(1).startswith(b"0=11,"))
        self.assertEqual(len(boards.body(1).split(b",")), LIST_LENGTH)

    def test_each_user_once(self) -> None:
        """A user appears at most once, with their best score."""
        boards = Leaderboards()
        for score in (10, 30, 20):
            boards.record(1, 4, score)
        boards.record(1, 5, 25)
        self.assertEqual(boards.body(1), b"4=30,5=25")

    def test_levels_are_separate(self) -> None:
        """Scores on one level do not show on another."""
        boards = Leaderboards()
        boards.record(1, 4, 10)
        boards.record(2, 5, 20)
        self.assertEqual(boards.body(1), b"4=10")
        self.assertEqual(boards.body(2), b"5=20")

    def test_body_cached_until_change(self) -> None:
        """The list body is rendered once and reused until the list changes."""
        boards = Leaderboards()
        boards.record(1, 4, 10)
        first = boards.body(1)
        self.assertIs(boards.body(1), first)
        boards.record(1, 4, 5)  # not better: no change
        self.assertIs(boards.body(1), first)
        boards.record(1, 4, 11)
        self.assertEqual(boards.body(1), b"4=11")
