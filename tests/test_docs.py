"""
The documentation matches the code: README's option table and test command.
"""

import os
import re

from twisted.trial.unittest import TestCase

from gameserver.server_tap import Options
from tests.support import ROOT


def read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


class ReadmeTests(TestCase):
    """
    README.md documents what the code does.
    """

    def test_every_option_documented(self) -> None:
        """Every option of --help is in README's table with its default."""
        rows = {
            m.group(1): m.group(2)
            for m in re.finditer(
                r"^\|[^|]*`--([a-z-]+)`[^|]*\| ([^|]*) \|", read("README.md"), re.M
            )
        }
        # Options with a method of their own (repeatable ones) have no default.
        methods = [
            name[4:].replace("_", "-")
            for name in dir(Options)
            if name.startswith("opt_") and name not in ("opt_help", "opt_version")
        ]
        for long in methods:
            self.assertIn(long, rows)
        for long, _, default, *_ in Options.optParameters:
            self.assertIn(long, rows)
            if default is None:
                self.assertTrue(rows[long].startswith("none"), rows[long])
            else:
                self.assertEqual(
                    rows[long].strip("`"),
                    f"{default:g}" if isinstance(default, float) else str(default),
                )

    def test_ci_runs_readme_command(self) -> None:
        """.ci/run runs the test command README gives, unchanged."""
        readme = read("README.md")
        # Everything but the shebang, comments and the shell's setup.
        command = [
            line
            for line in read(".ci/run").splitlines()
            if line and not line.startswith(("#", "set ", "cd "))
        ]
        self.assertEqual(len(command), 1)
        self.assertIn("```sh\n" + command[0] + "\n```", readme)

    def test_tac_documents_every_option(self) -> None:
        """gameserver.tac names the environment variable of every option."""
        tac = read("gameserver.tac")
        for long, *_ in Options.optParameters:
            self.assertIn("GAMESERVER_" + long.upper().replace("-", "_"), tac)
