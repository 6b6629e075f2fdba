"""Tests reach review states only through the real services, so ledgers and trails stay true."""

from __future__ import annotations

import itertools

from django.contrib.auth.models import Group

from approvals.models import TemplateCategory, TemplateVersion
from approvals.services import (
    policy_create,
    review_decide,
    template_create,
    template_version_create,
    template_version_submit,
)
from crm import roles

_names = itertools.count(1)

SUBJECT = "Ihr Kinoprogramm"
BODY = "Hallo {{ first_name }}, diese Woche läuft ein neuer Film."


def group(name: str) -> Group:
    return Group.objects.get_or_create(name=name)[0]


def three_stage_policy(team, category=TemplateCategory.UTILITY, *, required=(1, 1, 1)):
    """Editorial -> legal -> medical, decided by the reviewer role groups."""
    return policy_create(
        team=team,
        category=category,
        name="Editorial, legal, medical",
        stages=[
            ("Editorial", group(roles.REVIEWER_EDITORIAL), required[0]),
            ("Legal", group(roles.REVIEWER_LEGAL), required[1]),
            ("Medical", group(roles.REVIEWER_MEDICAL), required[2]),
        ],
        actor=None,
    )


def new_template(team, author, *, channel="email", category=TemplateCategory.UTILITY, **extra):
    return template_create(
        team=team,
        name=f"programme_{next(_names)}",
        channel=channel,
        category=category,
        language=extra.pop("language", "de"),
        actor=author,
        **extra,
    )


def draft(
    team, author, *, template=None, channel="email", language="de", **fields
) -> TemplateVersion:
    template = template or new_template(team, author, channel=channel, language=language)
    fields.setdefault("body", BODY)
    if template.channel == "email":
        fields.setdefault("subject", SUBJECT)
    return template_version_create(template=template, actor=author, **fields)


def submitted(team, author, **fields) -> TemplateVersion:
    version = draft(team, author, **fields)
    return template_version_submit(version=version, actor=author)


def decide(version, reviewer, decision="approve", comment="", content_hash=None):
    version.refresh_from_db()
    return review_decide(
        version=version,
        reviewer=reviewer,
        decision=decision,
        content_hash=content_hash or version.content_hash,
        comment=comment,
    )


def approve_all(version, *reviewers) -> TemplateVersion:
    for reviewer in reviewers:
        decide(version, reviewer)
    version.refresh_from_db()
    return version


def approved(team, author, reviewers, **fields) -> TemplateVersion:
    """A version taken through every stage of `three_stage_policy` (which must exist)."""
    return approve_all(submitted(team, author, **fields), *reviewers)
