"""
A minimal aiohttp implementation of the scores API, the benchmark's rival.

In memory, with one live key per user expiring after 600 s, best score per
user, top 15 with ties to the first, and list bodies cached until they change:
what a developer writing their own back-end on aiohttp would start from.

    python bench/aiohttp_scores.py PORT
"""

import secrets
import sys
import time
from bisect import insort

from aiohttp import web

TTL = 600.0
MAX = 2**31 - 1


def number(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 10:
        return None
    value = int(text)
    return value if value <= MAX else None


class Scores:
    def __init__(self) -> None:
        self.sessions: dict[str, tuple[int, float]] = {}
        self.user_key: dict[int, str] = {}
        self.boards: dict[int, list[tuple[int, int, int]]] = {}
        self.bodies: dict[int, bytes] = {}
        self.order = 0

    def login(self, user: int) -> str:
        old = self.user_key.pop(user, None)
        if old is not None:
            self.sessions.pop(old, None)
        key = secrets.token_urlsafe(16).replace("-", "a").replace("_", "b")
        self.sessions[key] = (user, time.monotonic() + TTL)
        self.user_key[user] = key
        return key

    def user(self, key: str) -> int | None:
        entry = self.sessions.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def post(self, level: int, user: int, score: int) -> None:
        board = self.boards.setdefault(level, [])
        if len(board) >= 15 and -score >= board[-1][0]:
            return
        for i, (neg, _, holder) in enumerate(board):
            if holder == user:
                if -neg >= score:
                    return
                del board[i]
                break
        self.order += 1
        insort(board, (-score, self.order, user))
        del board[15:]
        self.bodies.pop(level, None)

    def body(self, level: int) -> bytes:
        body = self.bodies.get(level)
        if body is None:
            board = self.boards.get(level, [])
            body = ",".join(f"{u}={-n}" for n, _, u in board).encode()
            self.bodies[level] = body
        return body


scores = Scores()


async def login(request: web.Request) -> web.Response:
    user = number(request.match_info["id"])
    if user is None:
        return web.Response(status=400)
    return web.Response(text=scores.login(user))


async def score(request: web.Request) -> web.Response:
    body = await request.read()
    if len(body) > 1024:
        return web.Response(status=413)
    level = number(request.match_info["id"])
    value = number(body.decode("ascii", "replace").strip())
    if level is None or value is None:
        return web.Response(status=400)
    user = scores.user(request.query.get("sessionkey", ""))
    if user is None:
        return web.Response(status=401)
    scores.post(level, user, value)
    return web.Response()


async def highscorelist(request: web.Request) -> web.Response:
    level = number(request.match_info["id"])
    if level is None:
        return web.Response(status=400)
    return web.Response(body=scores.body(level), content_type="text/plain")


def main() -> None:
    app = web.Application()
    app.router.add_get("/{id}/login", login)
    app.router.add_post("/{id}/score", score)
    app.router.add_get("/{id}/highscorelist", highscorelist)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None)


if __name__ == "__main__":
    main()
