"""What every msupply-sync management command shares: exit codes, -v, and progress.

Exit codes: 0 success; 1 a failure, or input the command refused (Django's CommandError);
2 a usage error argparse caught (unknown option, bad choice or number: Django's own); 3 a sync
was already running, so this one did not start.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand

from .progress import Progress, ProgressReporter, progress_reporter

EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3


class OperatorCommand(BaseCommand):
    """A command that reports what it did at -v 1 and above, and only errors at -v 0.

    What a command was asked for (--json, a listing, an issued key) is its result and is
    printed at every verbosity, as Django's dumpdata and showmigrations do; confirmations,
    notes and progress are chatter and follow -v.
    """

    verbosity = 1
    _reporter: Progress | None = None

    def execute(self, *args: Any, **options: Any) -> Any:
        self.verbosity = int(options.get("verbosity", 1))
        return super().execute(*args, **options)

    def say(self, message: str) -> None:
        """Write a confirmation or note on stdout, unless -v 0."""
        if self.verbosity < 1:
            return
        if isinstance(self._reporter, ProgressReporter):
            # Above the bar under way, which a plain write would break in two.
            self._reporter(message)
        else:
            self.stdout.write(message)

    def note(self, message: str) -> None:
        """Write a note meant for a person on stderr (stdout carries a result), unless -v 0."""
        if self.verbosity >= 1:
            self.stderr.write(message)

    @contextmanager
    def progress(self, *, quiet: bool = False) -> Iterator[Progress]:
        """A progress sink on stdout for the length of the block (none if `quiet`)."""
        # The wrapped stream itself: OutputWrapper ends every write with a newline, and a bar
        # redraws its line with carriage returns.
        stream = cast(TextIO, self.stdout._out)
        reporter = progress_reporter(stream, verbosity=0 if quiet else self.verbosity)
        self._reporter = reporter
        try:
            yield reporter
        finally:
            self._reporter = None
            if isinstance(reporter, ProgressReporter):
                reporter.close()
