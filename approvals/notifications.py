"""E-mails of the review workflow (Django's mail backend), in the site's LANGUAGE_CODE.

Reviewers hear when a version enters their stage, authors hear of every decision, template
owners hear before approved content expires. Review mails are sent by tasks registered
on commit (approvals.services), so a rolled-back decision never announces itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.mail import send_mail, send_mass_mail
from django.urls import NoReverseMatch, reverse
from django.utils import translation
from django.utils.translation import gettext as _

from approvals import selectors
from approvals.models import Decision, ReviewDecision, TemplateVersion, VersionState

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)


def version_url(version: TemplateVersion) -> str:
    """Where the version is read and decided (the admin), or "" if the admin is not there."""
    try:
        path = reverse("admin:approvals_templateversion_review", args=[version.pk])
    except NoReverseMatch:
        return ""
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


def _describe(version: TemplateVersion) -> dict[str, Any]:
    template = version.template
    return {
        "template": template.name,
        "number": version.number,
        "language": template.language,
        "channel": template.get_channel_display(),
        "team": template.team.name,
        "url": version_url(version),
    }


def notify_stage_reviewers(*, version_id: int, stage_index: int | None = None) -> int:
    """Tell everyone who may decide the version's current stage; returns how many were told.

    Nothing is sent when the version moved on since the notice was scheduled.
    """
    version = (
        TemplateVersion.objects.select_related("template", "template__team", "author")
        .filter(pk=version_id)
        .first()
    )
    if version is None or version.state != VersionState.IN_REVIEW:
        return 0
    if stage_index is not None and version.stage_index != stage_index:
        return 0
    stage = selectors.current_stage(version)
    recipients = [user.email for user in selectors.stage_reviewers(version) if user.email]
    if stage is None or not recipients:
        logger.info("template version %s: no reviewer to notify", version_id)
        return 0
    with translation.override(settings.LANGUAGE_CODE):
        facts = {**_describe(version), "stage": stage.name}
        subject = _("Review needed: %(template)s v%(number)s (%(stage)s)") % facts
        body = (
            _(
                "Version %(number)s of the %(channel)s template “%(template)s” "
                "(%(language)s, team %(team)s) waits for the stage “%(stage)s”."
            )
            % facts
        )
        if facts["url"]:
            body += "\n\n" + _("Review it here: %(url)s") % facts
    # One mail per reviewer: reviewers do not see each other's addresses.
    send_mass_mail([(subject, body, None, [address]) for address in recipients])
    return len(recipients)


def notify_decision_author(*, decision_id: int) -> int:
    """Tell the author of the version what a reviewer decided (1 if a mail went out)."""
    decision = (
        ReviewDecision.objects.select_related(
            "version", "version__template", "version__template__team", "version__author"
        )
        .filter(pk=decision_id)
        .first()
    )
    if decision is None:
        return 0
    author = decision.version.author
    if author is None or not author.email or not author.is_active:
        return 0
    with translation.override(settings.LANGUAGE_CODE):
        facts = {
            **_describe(decision.version),
            "stage": decision.stage_name,
            "reviewer": decision.reviewer_label,
            "decision": Decision(decision.decision).label,
            "comment": decision.comment,
        }
        subject = _("%(decision)s: %(template)s v%(number)s (%(stage)s)") % facts
        body = _("%(reviewer)s decided “%(decision)s” at the stage “%(stage)s”.") % facts
        if decision.comment:
            body += "\n\n" + _("Comment: %(comment)s") % facts
        if decision.decision == Decision.REQUEST_CHANGES:
            body += "\n\n" + _("The version is a draft again: edit it and submit it anew.")
        if facts["url"]:
            body += "\n\n" + facts["url"]
    send_mail(subject, body, None, [author.email])
    return 1


def send_expiry_notice(*, version: TemplateVersion, recipient: AbstractBaseUser) -> None:
    """Warn the template owner that approved content expires soon."""
    with translation.override(settings.LANGUAGE_CODE):
        facts = {
            **_describe(version),
            "until": version.valid_until.strftime("%Y-%m-%d %H:%M UTC"),
        }
        subject = _("Expires soon: %(template)s v%(number)s") % facts
        body = (
            _(
                "The approved content of version %(number)s of “%(template)s” (%(language)s, "
                "team %(team)s) expires on %(until)s. After that it is retired and cannot be "
                "sent. Submit a new version in time if it is still needed."
            )
            % facts
        )
        if facts["url"]:
            body += "\n\n" + facts["url"]
    send_mail(subject, body, None, [recipient.email])
