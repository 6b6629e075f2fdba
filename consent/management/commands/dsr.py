"""`manage.py dsr ...`: data-subject requests from the command line, thin over the services.

    dsr open --contact 12 --kind erasure [--received-at ISO] [--identity "how"]
    dsr verify --request 5 --method "reply from the address on file"
    dsr execute --request 5
    dsr reject --request 5 --reason "identity could not be verified"
    dsr export --contact 12 --out file.json      (records an access case, then writes it)
    dsr export --request 5 --out file.json       (the export of a completed access case)
    dsr erase --contact 12 --yes                 (records an erasure case and executes it)
    dsr lift-restriction --contact 12
    dsr list [--overdue]

Every request is recorded as a case. Runs as the system unless `--user NAME` (given before
the verb: `dsr --user alice execute --request 5`) names a team member allowed to handle
requests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from consent import selectors, services
from consent.models import DataSubjectRequest
from crm.errors import DomainError
from crm.models import Contact

OPERATOR_IDENTITY = "verified by the operator (manage.py dsr)"


class Command(BaseCommand):
    help = "Open, verify, execute, reject, export and list data-subject requests (GDPR)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--user", help="Username to act as (recorded as handler); default: the system."
        )
        sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

        open_ = sub.add_parser("open", help="Record a new request as a case.")
        open_.add_argument("--contact", type=int, required=True)
        open_.add_argument("--kind", required=True, choices=DataSubjectRequest.Kind.values)
        open_.add_argument("--received-at", help="ISO 8601; default: now.")
        open_.add_argument("--identity", default="", help="How the identity was verified.")

        verify = sub.add_parser("verify", help="Record how the identity was verified.")
        verify.add_argument("--request", type=int, required=True)
        verify.add_argument("--method", required=True)

        execute = sub.add_parser("execute", help="Carry out a verified request.")
        execute.add_argument("--request", type=int, required=True)

        reject = sub.add_parser("reject", help="Close a request without acting on it.")
        reject.add_argument("--request", type=int, required=True)
        reject.add_argument("--reason", required=True)

        export = sub.add_parser("export", help="Write an access export (JSON) to a file.")
        target = export.add_mutually_exclusive_group(required=True)
        target.add_argument("--contact", type=int)
        target.add_argument("--request", type=int)
        export.add_argument("--out", required=True, help="File to write; '-' for stdout.")
        export.add_argument("--identity", default=OPERATOR_IDENTITY)

        erase = sub.add_parser("erase", help="Erase a contact (records an erasure case).")
        erase.add_argument("--contact", type=int, required=True)
        erase.add_argument("--identity", default=OPERATOR_IDENTITY)
        erase.add_argument("--yes", action="store_true", help="Confirm: erasure cannot be undone.")

        lift = sub.add_parser("lift-restriction", help="End a restriction of processing.")
        lift.add_argument("--contact", type=int, required=True)

        list_ = sub.add_parser("list", help="List open requests, oldest due first.")
        list_.add_argument("--overdue", action="store_true", help="Only those past due.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.actor = self._user(options["user"]) if options.get("user") else None
        verb = options["verb"].replace("-", "_")
        try:
            getattr(self, f"do_{verb}")(options)
        except DomainError as error:
            raise CommandError(error.message) from error

    def _user(self, username: str) -> Any:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(_("No active user “%(name)s”.") % {"name": username})
        return user

    def _contact(self, pk: int) -> Contact:
        contact = Contact.objects.filter(pk=pk).first()
        if contact is None:
            raise CommandError(_("There is no contact with id %(id)s.") % {"id": pk})
        return contact

    def _case(self, pk: int) -> DataSubjectRequest:
        case = DataSubjectRequest.objects.select_related("contact").filter(pk=pk).first()
        if case is None:
            raise CommandError(_("There is no request with id %(id)s.") % {"id": pk})
        return case

    def _show(self, case: DataSubjectRequest) -> None:
        self.stdout.write(
            f"#{case.pk} {case.kind} contact={case.contact_id} status={case.status} "
            f"due={case.due_at:%Y-%m-%d} identity_verified={case.identity_verified}"
            + (f"\n  {case.outcome}" if case.outcome else "")
        )

    def _open_verified(self, contact: Contact, kind: str, identity: str) -> DataSubjectRequest:
        return services.dsr_open(
            contact=contact, kind=kind, actor=self.actor, identity_method=identity
        )

    def do_open(self, options: dict[str, Any]) -> None:
        received_at: dt.datetime | None = None
        if options["received_at"]:
            received_at = parse_datetime(options["received_at"])
            if received_at is None or received_at.tzinfo is None:
                raise CommandError(_("--received-at needs an ISO 8601 time with a time zone."))
        case = services.dsr_open(
            contact=self._contact(options["contact"]),
            kind=options["kind"],
            actor=self.actor,
            received_at=received_at,
            identity_method=options["identity"],
        )
        self._show(case)

    def do_verify(self, options: dict[str, Any]) -> None:
        case = services.dsr_verify_identity(
            request=self._case(options["request"]), actor=self.actor, method=options["method"]
        )
        self._show(case)

    def do_execute(self, options: dict[str, Any]) -> None:
        self._show(services.dsr_execute(request=self._case(options["request"]), actor=self.actor))

    def do_reject(self, options: dict[str, Any]) -> None:
        case = services.dsr_reject(
            request=self._case(options["request"]), actor=self.actor, reason=options["reason"]
        )
        self._show(case)

    def do_export(self, options: dict[str, Any]) -> None:
        if options["request"]:
            case = self._case(options["request"])
            if case.kind != DataSubjectRequest.Kind.ACCESS or not case.result_file:
                raise CommandError(_("Request #%(id)s has no access export.") % {"id": case.pk})
        else:
            case = self._open_verified(
                self._contact(options["contact"]),
                DataSubjectRequest.Kind.ACCESS,
                options["identity"],
            )
            case = services.dsr_execute(request=case, actor=self.actor)
        with case.result_file.open("rb") as stored:
            body = stored.read()
        if options["out"] == "-":
            self.stdout.write(body.decode("utf-8"))
            return
        Path(options["out"]).write_bytes(body)
        self.stderr.write(
            _("Request #%(id)s: export written to %(path)s.")
            % {"id": case.pk, "path": options["out"]}
        )

    def do_erase(self, options: dict[str, Any]) -> None:
        contact = self._contact(options["contact"])
        if not options["yes"]:
            raise CommandError(
                _("Erasure cannot be undone. Run again with --yes to erase contact %(id)s.")
                % {"id": contact.pk}
            )
        case = self._open_verified(contact, DataSubjectRequest.Kind.ERASURE, options["identity"])
        self._show(services.dsr_execute(request=case, actor=self.actor))

    def do_lift_restriction(self, options: dict[str, Any]) -> None:
        contact = services.contact_restriction_lift(
            contact=self._contact(options["contact"]), actor=self.actor
        )
        self.stdout.write(_("Contact %(id)s: restriction lifted.") % {"id": contact.pk})

    def do_list(self, options: dict[str, Any]) -> None:
        cases = DataSubjectRequest.objects.filter(status=DataSubjectRequest.Status.OPEN)
        if options["overdue"]:
            cases = selectors.data_subject_requests_overdue(cases)
        for case in cases.order_by("due_at", "pk"):
            self._show(case)
