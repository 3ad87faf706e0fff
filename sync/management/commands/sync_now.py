"""Run one full sync with the master now and report what moved."""

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from sync.models import SyncResult
from sync.run import SyncAlreadyRunning, sync_run


class Command(BaseCommand):
    help = "Run one sync with the master: handshake, push, pull. Exits non-zero on failure."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        as_json = options["json"]
        try:
            log = sync_run(progress=(lambda message: None) if as_json else self.stdout.write)
        except SyncAlreadyRunning as error:
            if as_json:
                self.stdout.write(json.dumps({"result": "already_running", "message": str(error)}))
            raise CommandError(str(error)) from error
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
            self.stdout.write(
                f"{log.get_result_display()}: pushed {log.records_pushed} records "
                f"({log.bytes_sent} bytes), pulled {log.records_pulled} records "
                f"({log.bytes_received} bytes) in {duration:.2f} s."
            )
        if log.result != SyncResult.SUCCESS:
            raise CommandError(log.message)
