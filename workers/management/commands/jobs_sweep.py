import time

from django.conf import settings
from django.core.management.base import BaseCommand

from workers.jobs import jobs_sweep


class Command(BaseCommand):
    help = (
        "Publish background jobs that failed to publish, retry or fail the jobs of dead "
        "workers, and re-publish lost flag updates. Every worker already does this every "
        "QUORUM_JOB_SWEEP_SECONDS; run this with --loop where workers run with the sweep off."
    )

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="sweep until stopped")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between sweeps with --loop (default QUORUM_JOB_SWEEP_SECONDS or 10)",
        )

    def handle(self, *args, loop: bool, interval: float | None, **opts):
        interval = interval or settings.QUORUM_JOB_SWEEP_SECONDS or 10
        while True:
            report = jobs_sweep()
            self.stdout.write(
                f"published {report.published}, retried {report.retried}, failed "
                f"{report.failed}, flag updates {report.flag_updates}"
            )
            if not loop:
                return
            time.sleep(interval)
