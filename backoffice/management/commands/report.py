from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from backoffice.reports import PERIODS, REPORTS, ReportError, parse_day, report_build


class Command(BaseCommand):
    help = (
        "Month-end reports: fees (platform fee income per day or month, from the ledger), "
        "payouts (completed in the range, by completion time) or statement (per client, ties "
        "to the ledger). Dates are UTC days, both included. --csv prints CSV."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("report", choices=REPORTS)
        parser.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD")
        parser.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD")
        parser.add_argument("--by", choices=PERIODS, default="day")
        parser.add_argument("--client", default="", metavar="REF")
        parser.add_argument("--csv", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            report = report_build(
                name=str(options["report"]),
                start=parse_day(str(options["start"]), field="--from"),
                end=parse_day(str(options["end"]), field="--to"),
                by=str(options["by"]),
                client=str(options["client"] or ""),
            )
        except ReportError as exc:
            self.stderr.write(str(exc))
            raise SystemExit(1) from None
        self.stdout.write(report.as_csv() if options["csv"] else report.as_text(), ending="")
        if not options["csv"]:
            self.stdout.write("")
