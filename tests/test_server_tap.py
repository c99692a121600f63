"""
Tests for L{gameserver.server_tap}: options, --help, the tac's environment.
"""

import os

from twisted.application.service import IServiceCollection
from twisted.internet.endpoints import _SystemdParser
from twisted.internet.task import Clock
from twisted.python.systemd import ListenFDs
from twisted.python.usage import UsageError
from twisted.trial.unittest import TestCase

from gameserver.server_tap import (
    Options,
    makeService,
    options_from_environment,
    relay_config,
)
from gameserver.sessions import SignedSessions, StoredSessions


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(TestCase):
    """
    Parsing and validating C{twistd gameserver} options.
    """

    def secret_file(self, content: bytes) -> str:
        path = str(self.mktemp())
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_defaults(self) -> None:
        """Defaults: port 8080 on all interfaces, 600 s stored sessions, no log."""
        options = parse()
        self.assertEqual(options["port"], "tcp:8080")
        self.assertEqual(options["session-ttl"], 600)
        self.assertEqual(options["sessions"], "stored")
        self.assertIsNone(options["secret"])
        self.assertIsNone(options["access-log"])

    def test_port_number(self) -> None:
        """A bare port number listens on TCP on all interfaces."""
        self.assertEqual(parse("--port", "9000")["port"], "tcp:9000")
        self.assertEqual(parse("-p", "9001")["port"], "tcp:9001")

    def test_port_endpoint(self) -> None:
        """An endpoint description is used as it is."""
        for description in ("tcp:8080:interface=127.0.0.1", "unix:/tmp/gs.sock"):
            self.assertEqual(parse("--port", description)["port"], description)

    def test_port_systemd(self) -> None:
        """A systemd endpoint is accepted when systemd passed a socket."""
        self.patch(_SystemdParser, "_sddaemon", ListenFDs([3], ["gameserver"]))
        description = "systemd:domain=INET:index=0"
        self.assertEqual(parse("--port", description)["port"], description)

    def test_port_systemd_without_socket(self) -> None:
        """A systemd endpoint without a passed socket is a usage error with a hint."""
        self.patch(_SystemdParser, "_sddaemon", ListenFDs([], []))
        e = self.assertRaises(
            UsageError, parse, "--port", "systemd:domain=INET:index=0"
        )
        self.assertIn("LISTEN_FDS", str(e))

    def test_port_invalid(self) -> None:
        """An unknown endpoint type or a bad TLS setting is a usage error."""
        for description in (
            "bogus:1",
            "tcp:notaport",
            "ssl:8443:privateKey=/nonexistent.pem",
        ):
            e = self.assertRaises(UsageError, parse, "--port", description)
            self.assertIn("invalid --port", str(e))

    def test_session_ttl(self) -> None:
        """--session-ttl takes a positive number of seconds."""
        self.assertEqual(parse("--session-ttl", "2.5")["session-ttl"], 2.5)
        for bad in ("0", "-1", "abc", "nan"):
            self.assertRaises(UsageError, parse, "--session-ttl", bad)

    def test_sessions_mode(self) -> None:
        """--sessions accepts only stored or signed."""
        self.assertRaises(UsageError, parse, "--sessions", "cookies")

    def test_signed_needs_secret(self) -> None:
        """--sessions=signed without --secret-file is a usage error."""
        e = self.assertRaises(UsageError, parse, "--sessions", "signed")
        self.assertIn("--secret-file", str(e))

    def test_secret_file_missing(self) -> None:
        """A missing secret file is a clear usage error."""
        e = self.assertRaises(
            UsageError,
            parse,
            "--sessions=signed",
            "--secret-file",
            "/nonexistent/secret",
        )
        self.assertIn("cannot read --secret-file", str(e))

    def test_secret_file_unreadable(self) -> None:
        """An unreadable secret file (here a directory) is a clear usage error."""
        path = self.mktemp()
        os.mkdir(path)
        e = self.assertRaises(
            UsageError, parse, "--sessions=signed", "--secret-file", path
        )
        self.assertIn("cannot read --secret-file", str(e))

    def test_secret_too_short(self) -> None:
        """A secret under 16 bytes is a usage error."""
        path = self.secret_file(b"short\n")
        e = self.assertRaises(
            UsageError, parse, "--sessions=signed", "--secret-file", path
        )
        self.assertIn("at least 16", str(e))

    def test_secret_read(self) -> None:
        """The secret is the file's content without surrounding whitespace."""
        path = self.secret_file(b"  a-long-enough-secret-value\n")
        options = parse("--sessions=signed", "--secret-file", path)
        self.assertEqual(options["secret"], b"a-long-enough-secret-value")

    def test_secret_without_signed(self) -> None:
        """--secret-file without --sessions=signed is a usage error."""
        path = self.secret_file(b"a-long-enough-secret-value")
        self.assertRaises(UsageError, parse, "--secret-file", path)

    def test_access_log_unwritable(self) -> None:
        """An access log that cannot be opened is a usage error."""
        e = self.assertRaises(UsageError, parse, "--access-log", "/nonexistent/dir/log")
        self.assertIn("--access-log", str(e))

    def test_redis(self) -> None:
        """--redis parses its URL (with --redis-password-file) and a timeout."""
        from gameserver.redis_connection import RedisSettings

        path = self.secret_file(b"redis-pass\n")
        options = parse(
            "--redis",
            "redis://127.0.0.1:6380/2",
            "--redis-password-file",
            path,
            "--redis-timeout",
            "0.5",
        )
        self.assertEqual(
            options["redis-settings"],
            RedisSettings(port=6380, db=2, password="redis-pass"),
        )
        self.assertEqual(options["redis-timeout"], 0.5)
        self.assertIsNone(parse()["redis-settings"])

    def test_redis_usage_errors(self) -> None:
        """A bad --redis, --redis with --database, or a stray password file fail."""
        path = self.secret_file(b"x")
        database = str(self.mktemp())
        for argv in (
            ["--redis", "http://127.0.0.1"],
            ["--redis", "redis://h/x"],
            ["--redis", "redis://h", "--database", database],
            ["--redis", "redis://:a@h", "--redis-password-file", path],
            ["--redis", "redis://h", "--redis-password-file", "/nonexistent/pw"],
            ["--redis-password-file", path],
            ["--redis", "redis://h", "--redis-timeout", "0"],
        ):
            self.assertRaises(UsageError, parse, *argv)
        self.assertFalse(os.path.exists(database))

    def test_redis_service(self) -> None:
        """With --redis the state is the Redis store, on a connection not yet made."""
        from gameserver.redis_scores import RedisScores
        from gameserver.server_tap import make_site

        _, state = make_site(parse("--redis", "redis://127.0.0.1:1/0"), Clock())
        self.assertIsInstance(state.scores, RedisScores)
        self.assertIs(state.connection, state.scores.connection)  # type: ignore[attr-defined]
        self.assertFalse(state.connection.connected())

    def test_relay_max_data(self) -> None:
        """--relay-max-data sets RelayConfig.max_data (256 MiB by default); 0 or
        a negative number is a usage error."""
        self.assertEqual(relay_config(parse()).max_data, 268_435_456)
        self.assertEqual(relay_config(parse("--relay-max-data", "1000")).max_data, 1000)
        for bad in ("0", "-1", "x"):
            self.assertRaises(UsageError, parse, "--relay-max-data", bad)

    def test_help_lists_every_option_with_default(self) -> None:
        """--help names every option and shows each default."""
        text = str(Options())
        for long, _, default, *_ in Options.optParameters:
            self.assertIn(f"--{long}=", text)
            if default is not None:
                self.assertIn(f"[default: {default}]", " ".join(text.split()))
            else:
                self.assertIn("[default: none]", " ".join(text.split()))


class EnvironmentTests(TestCase):
    """
    gameserver.tac reads the same options from GAMESERVER_* variables.
    """

    def test_environment(self) -> None:
        """Each option is read from its GAMESERVER_ variable."""
        options = options_from_environment(
            {
                "GAMESERVER_PORT": "9999",
                "GAMESERVER_SESSION_TTL": "30",
                "GAMESERVER_SESSIONS": "stored",
                "GAMESERVER_ACCESS_LOG": "",
            }
        )
        self.assertEqual(options["port"], "tcp:9999")
        self.assertEqual(options["session-ttl"], 30)
        self.assertIsNone(options["access-log"])

    def test_environment_defaults(self) -> None:
        """Without variables the defaults apply."""
        self.assertEqual(options_from_environment({})["port"], "tcp:8080")

    def test_environment_invalid(self) -> None:
        """A bad variable is the same usage error as the bad option."""
        self.assertRaises(
            UsageError, options_from_environment, {"GAMESERVER_SESSIONS": "signed"}
        )


class MakeServiceTests(TestCase):
    """
    makeService builds the state and the listening service.
    """

    def test_services(self) -> None:
        """The service holds the state service and the listener."""
        service = makeService(parse("--port", "tcp:0:interface=127.0.0.1"), Clock())
        self.assertEqual(len(list(IServiceCollection(service))), 2)

    def test_session_modes(self) -> None:
        """--sessions picks the session store."""
        from gameserver.server_tap import make_sessions

        clock = Clock()
        self.assertIsInstance(make_sessions(parse(), clock), StoredSessions)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("a-long-enough-secret-value")
        signed = parse("--sessions=signed", "--secret-file", path)
        self.assertIsInstance(make_sessions(signed, clock), SignedSessions)
