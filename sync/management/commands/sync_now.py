"""Run one full sync with the master now and report what moved."""

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from msupply.commands import EXIT_ALREADY_RUNNING, OperatorCommand
from sync.models import SyncResult
from sync.run import SyncAlreadyRunning, sync_run


class Command(OperatorCommand):
    help = (
        "Run one sync with the master: handshake, push, pull. Exits 0 on success, 1 on failure, "
        "3 when a sync is already running. A terminal shows a progress bar; -v 0 prints only "
        "errors; --json prints one JSON object whatever -v says."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        as_json = options["json"]
        try:
            with self.progress(quiet=as_json) as progress:
                log = sync_run(progress=progress)
        except SyncAlreadyRunning as error:
            if as_json:
                self.stdout.write(json.dumps({"result": "already_running", "message": str(error)}))
            raise CommandError(str(error), returncode=EXIT_ALREADY_RUNNING) from error
        duration = (log.ended_at - log.started_at).total_seconds() if log.ended_at else 0.0
        report = {
            "result": log.result,
            "records_pushed": log.records_pushed,
            "records_pulled": log.records_pulled,
            "bytes_sent": log.bytes_sent,
            "bytes_received": log.bytes_received,
            "duration_seconds": round(duration, 3),
            "error_code": log.error_code,
            "message": log.message,
        }
        if as_json:
            self.stdout.write(json.dumps(report))
        else:
            self.say(
                _(
                    "%(result)s: pushed %(pushed)d records (%(sent)d bytes), pulled %(pulled)d "
                    "records (%(received)d bytes) in %(seconds).2f s."
                )
                % {
                    "result": log.get_result_display(),
                    "pushed": log.records_pushed,
                    "sent": log.bytes_sent,
                    "pulled": log.records_pulled,
                    "received": log.bytes_received,
                    "seconds": duration,
                }
            )
        if log.result != SyncResult.SUCCESS:
            raise CommandError(log.message)
