"""
Crash and restart tests of C{--database}: the real twistd plugin on
127.0.0.1, killed with SIGKILL at random moments under load, and stopped with
SIGTERM under load; after each restart, everything it acknowledged is there,
and the writer process of the killed server is gone.
"""

import os
import random
import re
import time
from dataclasses import dataclass, field

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.support import ServerProcess, plugin_args

# twistd exits 0, or re-raises the SIGTERM it shut down for.
CLEAN_EXIT = (0, -15)
CYCLES = 20
CLIENTS = 4
# Each client plays its own users, so its requests never race another's, and
# all users together (12) fit in one top list: no acknowledged score can
# legitimately fall off a list.
USERS_PER_CLIENT = 3
LEVELS = 20
# How a server logs the start of its writer process.
WRITER_STARTED = re.compile(r"writer process (\d+) started")
# A level only the key checks post to (score 0).
CHECK_LEVEL = 1_000_000
MAX_OPERATIONS = 400


@dataclass
class User:
    """
    What the server acknowledged for one user.
    """

    number: int
    key: bytes | None = None
    # A login was sent after the acknowledged key and not answered: if it
    # was committed, it revoked that key.
    unresolved_login: bool = False
    # (level) -> the scores sent, and the best one acknowledged.
    sent: dict[int, set[int]] = field(default_factory=dict)
    acknowledged: dict[int, int] = field(default_factory=dict)


class Ledger:
    """
    The acknowledged writes of all clients, and the check against a server.
    """

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.users = [User(n) for n in range(CLIENTS * USERS_PER_CLIENT)]
        self.acknowledged = 0

    def of_client(self, client: int) -> list[User]:
        first = client * USERS_PER_CLIENT
        return self.users[first : first + USERS_PER_CLIENT]


class Client:
    """
    One client's HTTP connection pool to one server process.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        # A retried request could be a second login the ledger never saw.
        self.pool.retryAutomatically = False
        self.http = treq.client.HTTPClient(Agent(reactor, pool=self.pool))

    async def get(self, path: str) -> tuple[int, bytes]:
        response = await self.http.get(self.url + path)
        return response.code, await response.content()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        response = await self.http.post(self.url + path, data=body)
        return response.code, await response.content()

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


class DurabilityTestCase(TestCase):
    """
    Drives a durable server and checks it against a L{Ledger}.
    """

    timeout = 90

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "game.db")

    async def start(self) -> ServerProcess:
        server = ServerProcess(plugin_args("--database", self.path))
        await server.start()
        self.addCleanup(server.stop)
        return server

    async def play(
        self, ledger: Ledger, number: int, client: Client, stop: list[bool]
    ) -> None:
        """
        Log in and post scores as client C{number}'s users until C{stop} or
        the first failure; record in C{ledger} what was acknowledged.
        """
        users = ledger.of_client(number)
        rng = ledger.random
        for _ in range(MAX_OPERATIONS):
            if stop:
                return
            user = rng.choice(users)
            try:
                if user.key is None or rng.random() < 0.2:
                    user.unresolved_login = True
                    code, body = await client.get(f"/{user.number}/login")
                    if code != 200:
                        return
                    user.key, user.unresolved_login = body, False
                else:
                    level = rng.randrange(LEVELS)
                    score = rng.randrange(1_000_000)
                    user.sent.setdefault(level, set()).add(score)
                    code, _ = await client.post(
                        f"/{level}/score?sessionkey={user.key.decode()}",
                        b"%d" % score,
                    )
                    self.assertNotEqual(code, 401, "a live key was refused")
                    if code != 200:
                        return
                    best = user.acknowledged.get(level, -1)
                    user.acknowledged[level] = max(best, score)
            except Exception:
                return  # killed mid-request: the outcome is unknown
            ledger.acknowledged += 1

    async def load(
        self, ledger: Ledger, server: ServerProcess, stop: list[bool]
    ) -> tuple[list[Client], "Deferred[object]"]:
        clients = [Client(server.url) for _ in range(CLIENTS)]
        playing = DeferredList(
            [
                Deferred.fromCoroutine(self.play(ledger, number, client, stop))
                for number, client in enumerate(clients)
            ],
            consumeErrors=True,
        )
        return clients, playing  # type: ignore[return-value]

    async def check(self, ledger: Ledger, server: ServerProcess) -> None:
        """
        Every acknowledged score is in its list, nothing there was never
        sent, and every acknowledged key works.
        """
        client = Client(server.url)
        try:
            for level in range(LEVELS):
                code, body = await client.get(f"/{level}/highscorelist")
                self.assertEqual(code, 200)
                listed = {}
                scores = []
                for entry in body.split(b",") if body else []:
                    number, score = map(int, entry.split(b"="))
                    listed[number] = score
                    scores.append(score)
                self.assertEqual(scores, sorted(scores, reverse=True))
                for user in ledger.users:
                    acknowledged = user.acknowledged.get(level)
                    if user.number in listed:
                        self.assertIn(listed[user.number], user.sent.get(level, set()))
                    if acknowledged is not None:
                        self.assertIn(user.number, listed, f"lost on level {level}")
                        self.assertGreaterEqual(listed[user.number], acknowledged)
            for user in ledger.users:
                if user.key is None:
                    continue
                code, _ = await client.post(
                    f"/{CHECK_LEVEL}/score?sessionkey={user.key.decode()}", b"0"
                )
                if user.unresolved_login and code == 401:
                    user.key = None  # revoked by a login that did commit
                else:
                    self.assertEqual(code, 200, f"key of user {user.number} lost")
                user.unresolved_login = False
        finally:
            await client.close()


def writer_pids(server: ServerProcess) -> list[int]:
    """
    The writer processes C{server} started.
    """
    return [int(pid) for pid in WRITER_STARTED.findall(server.output)]


async def gone(pid: int, timeout: float = 10.0) -> bool:
    """
    Whether process C{pid} has ended (or is a zombie) within C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        await deferLater(reactor, 0.01, lambda: None)


class CrashTests(DurabilityTestCase):
    """
    kill -9 at random moments loses nothing acknowledged.
    """

    async def test_kill_9_under_load(self) -> None:
        """
        Twenty SIGKILLs under load lose no acknowledged score or session
        key (whether folded or still in the journal the next start folds);
        each killed server's writer process exits on its own, and the next
        server starts while it may still be finishing its batch.
        """
        seed = random.randrange(2**32)
        self.addCleanup(lambda: print(f"test_kill_9_under_load seed {seed}"))
        ledger = Ledger(seed)
        orphans: list[int] = []
        # Starts that found journal rows the killed server left unfolded.
        replayed = 0
        for _ in range(CYCLES):
            server = await self.start()
            replayed += "journal lines left in" in server.output
            await self.check(ledger, server)
            stop: list[bool] = []
            clients, playing = await self.load(ledger, server, stop)
            await deferLater(reactor, ledger.random.uniform(0.05, 0.4))
            server._process.signalProcess("KILL")
            self.assertEqual(await server.ended(), -9)
            stop.append(True)
            await playing
            for client in clients:
                await client.close()
            orphans += writer_pids(server)
        for pid in orphans:
            self.assertTrue(
                await gone(pid), f"writer process {pid} outlived its server"
            )
        server = await self.start()
        replayed += "journal lines left in" in server.output
        await self.check(ledger, server)
        self.assertIn(await server.stop(), CLEAN_EXIT)
        self.assertGreater(ledger.acknowledged, CYCLES * 10)
        self.assertGreater(replayed, 0)  # the loader's fold was exercised


class TerminateTests(DurabilityTestCase):
    """
    SIGTERM under load: stop accepting, answer and commit what is in flight.
    """

    async def test_sigterm_under_load(self) -> None:
        """SIGTERM under load exits cleanly and keeps everything acknowledged."""
        ledger = Ledger(random.randrange(2**32))
        for _ in range(2):
            server = await self.start()
            await self.check(ledger, server)
            stop: list[bool] = []
            clients, playing = await self.load(ledger, server, stop)
            await deferLater(reactor, 0.5)
            self.assertIn(await server.stop(), CLEAN_EXIT)
            stop.append(True)
            await playing
            for client in clients:
                await client.close()
            # A write that arrives once the store is stopping gets 503 (and
            # web.py logs it); nothing may go unhandled.
            self.assertNotIn("Unhandled", server.output)
            self.assertIn("closed " + self.path, server.output)
            self.assertNotIn("writer process for", server.output)  # no failure
            for pid in writer_pids(server):
                self.assertTrue(await gone(pid, 0))
        server = await self.start()
        await self.check(ledger, server)
        self.assertGreater(ledger.acknowledged, 20)
