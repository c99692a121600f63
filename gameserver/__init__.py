"""
gameserver: a small, fast, dependable back-end for indie and mobile games.

Players log in, post scores, read high-score lists and relay two-player
matches; see README.md for the wire contracts and how to run it.
"""

__version__ = "0.1.0"
