"""How long work reports progress: a tqdm bar in a terminal, plain lines when piped, or nothing."""

from typing import Protocol, TextIO

from tqdm import tqdm


class Progress(Protocol):
    """A progress sink: a message, and for counted work how much of how much is done (of what
    `unit`, under what `label`)."""

    def __call__(
        self,
        message: str,
        /,
        *,
        done: int | None = None,
        total: int | None = None,
        label: str = "",
        unit: str = "records",
    ) -> None: ...


def progress_quiet(
    message: str,
    /,
    *,
    done: int | None = None,
    total: int | None = None,
    label: str = "",
    unit: str = "records",
) -> None:
    """The sink of work that nobody watches (a Celery task, --json, -v 0)."""


class ProgressReporter:
    """Counted updates drive a bar per label in a terminal; elsewhere every update is a line.

    A bar's rate and time left count only what this process did (`initial`), so an
    initialisation resumed after a dropped link does not claim the earlier run's records.
    """

    def __init__(self, stream: TextIO, *, bar: bool) -> None:
        self.stream = stream
        self.bar = bar
        self._bar: tqdm | None = None
        self._label = ""

    def __call__(
        self,
        message: str,
        /,
        *,
        done: int | None = None,
        total: int | None = None,
        label: str = "",
        unit: str = "records",
    ) -> None:
        if not self.bar or done is None:
            if self._bar is not None:
                self._bar.write(message, file=self.stream)
            else:
                self.stream.write(f"{message}\n")
                self.stream.flush()
            return
        if self._bar is None or label != self._label:
            self.close()
            self._label = label
            self._bar = tqdm(
                desc=label,
                total=total,
                initial=done,
                unit=f" {unit}",
                file=self.stream,
                dynamic_ncols=True,
                mininterval=0.2,
            )
            return
        if total is not None and total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """End the bar under way, leaving its last state on screen."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_reporter(stream: TextIO, *, verbosity: int, bar: bool | None = None) -> Progress:
    """The sink for `stream` at Django's `verbosity`: nothing at 0, a bar if `stream` is a
    terminal (or `bar` says so), plain lines otherwise."""
    if verbosity < 1:
        return progress_quiet
    return ProgressReporter(stream, bar=stream.isatty() if bar is None else bar)
