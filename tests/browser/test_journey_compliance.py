"""Compliance journey: a template version goes through editorial and legal review in the admin.

The editor writes and submits a version, the editorial reviewer approves, the legal reviewer
rejects with a comment, the editor reads it, starts a new draft from the wording, revises and
resubmits, and both reviewers approve. The author also holds the legal reviewer role, so the
four-eyes rule (not a missing permission) is what stops them deciding their own version.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from approvals.models import Decision, ReviewDecision, TemplateCategory, VersionState
from approvals.services import policy_create, template_create
from crm import roles

pytestmark = pytest.mark.django_db(transaction=True)

VERSIONS = reverse("admin:approvals_templateversion_changelist")
VERSION_ADD = reverse("admin:approvals_templateversion_add")
QUEUE = reverse("admin:approvals_templateversion_review_queue")

SUBJECT = "Ihr Kinoprogramm diese Woche"
FIRST_BODY = "Hallo {{ first_name }}, diese Woche zeigen wir den besten Film des Jahres."
REVISED_BODY = "Hallo {{ first_name }}, diese Woche zeigen wir den Gewinner des Publikumspreises."
LEGAL_COMMENT = (
    "„Bester Film des Jahres“ ist eine unbelegter Superlativ; bitte belegen oder streichen."
)


@pytest.fixture
def review_setup(team, make_user):
    editor = make_user("editor", roles.EDITOR, team)
    # A small team: the editor also does legal review of other people's texts.
    editor.groups.add(Group.objects.get(name=roles.REVIEWER_LEGAL))
    editorial = make_user("reviewer_editorial", roles.REVIEWER_EDITORIAL, team)
    legal = make_user("reviewer_legal", roles.REVIEWER_LEGAL, team)
    policy_create(
        team=team,
        category=TemplateCategory.UTILITY,
        name="Editorial and legal",
        stages=[
            ("Editorial", Group.objects.get(name=roles.REVIEWER_EDITORIAL), 1),
            ("Legal", Group.objects.get(name=roles.REVIEWER_LEGAL), 1),
        ],
        actor=None,
    )
    template = template_create(
        team=team,
        name="weekly_programme",
        channel="email",
        category=TemplateCategory.UTILITY,
        language="de",
        actor=editor,
    )
    return {"editor": editor, "editorial": editorial, "legal": legal, "template": template}


def success_text(page) -> str:
    return page.locator("ul.messagelist li.success").inner_text()


def version_row(page, version):
    return page.locator("#result_list tbody tr").filter(
        has=page.locator(f"input[name=_selected_action][value='{version.pk}']")
    )


def run_action(page, version, action: str) -> None:
    """Tick one version on the version list and run an admin action on it."""
    page.goto(VERSIONS)
    version_row(page, version).locator("input[name=_selected_action]").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def decide(journey, page, version, decision: str, comment: str = "") -> None:
    """The logged-in reviewer picks the version from their queue and records a decision."""
    page.goto(QUEUE)
    entry = page.locator(f"tr.queue-entry[data-version='{version.pk}']")
    assert entry.count() == 1
    entry.get_by_role("link", name="Review").click()
    page.check(f"input[name=decision][value='{decision}']")
    if comment:
        page.fill("textarea[name=comment]", comment)
    journey.shot(f"review of version {version.number}: {decision}")
    page.click("input[value='Record decision']")
    page.wait_for_url(re.compile(re.escape(QUEUE) + "$"))
    assert "Your decision on" in success_text(page)


def test_template_version_through_editorial_and_legal_review(journey, page, review_setup):
    editor, editorial, legal = (
        review_setup["editor"],
        review_setup["editorial"],
        review_setup["legal"],
    )
    template = review_setup["template"]

    # 1. The editor writes version 1 in the admin and submits it.
    journey.login(editor.username)
    page.goto(VERSION_ADD)
    page.select_option("#id_template", str(template.pk))
    page.fill("#id_subject", SUBJECT)
    page.fill("#id_body", FIRST_BODY)
    journey.shot("editor writes version 1")
    page.click("input[name=_save]")
    assert "was added successfully" in success_text(page)
    first = template.versions.get()
    assert (first.number, first.state, first.author) == (1, VersionState.DRAFT, editor)
    assert first.body == FIRST_BODY

    run_action(page, first, "submit_for_review")
    assert success_text(page) == "1 version submitted."
    assert "In review" in version_row(page, first).inner_text()
    journey.shot("version 1 submitted")
    first.refresh_from_db()
    assert first.state == VersionState.IN_REVIEW

    # 2. The editorial reviewer approves; the legal reviewer rejects with a comment.
    journey.logout()
    journey.login(editorial.username)
    decide(journey, page, first, Decision.APPROVE)
    journey.shot("editorial approved version 1")
    first.refresh_from_db()
    assert (first.state, first.stage_index) == (VersionState.IN_REVIEW, 1)

    journey.logout()
    journey.login(legal.username)
    decide(journey, page, first, Decision.REJECT, LEGAL_COMMENT)
    assert page.locator(f"tr.queue-entry[data-version='{first.pk}']").count() == 0
    journey.shot("legal rejected version 1")
    first.refresh_from_db()
    assert first.state == VersionState.REJECTED

    # 3. The editor finds the rejection and reads the legal comment.
    journey.logout()
    journey.login(editor.username)
    page.goto(VERSIONS)
    row = version_row(page, first)
    assert "Rejected" in row.inner_text()
    row.get_by_role("link", name="Show").click()
    assert page.locator("#version-state").inner_text().startswith("Rejected")
    history = page.locator("#decision-history tbody tr")
    assert history.count() == 2
    assert "Approve" in history.nth(0).inner_text()
    legal_row = history.nth(1).inner_text()
    assert "Legal" in legal_row
    assert "Reject" in legal_row
    assert LEGAL_COMMENT in legal_row
    assert page.locator("input[value='Record decision']").count() == 0
    journey.shot("editor reads the legal comment")

    # 4. Rejected is final: the editor starts version 2 from the wording and revises it.
    run_action(page, first, "new_draft_from")
    assert success_text(page) == "1 draft created."
    second = template.versions.get(number=2)
    assert (second.state, second.body) == (VersionState.DRAFT, FIRST_BODY)
    page.goto(reverse("admin:approvals_templateversion_change", args=[second.pk]))
    page.fill("#id_body", REVISED_BODY)
    journey.shot("editor revises version 2")
    page.click("input[name=_save]")
    assert "was changed successfully" in success_text(page)
    run_action(page, second, "submit_for_review")
    assert success_text(page) == "1 version submitted."
    journey.shot("version 2 submitted")
    second.refresh_from_db()
    assert (second.state, second.body) == (VersionState.IN_REVIEW, REVISED_BODY)
    first.refresh_from_db()
    assert first.state == VersionState.REJECTED  # the rejected wording stays on record

    # 5. Editorial approves version 2; it now waits for the legal stage.
    journey.logout()
    journey.login(editorial.username)
    decide(journey, page, second, Decision.APPROVE)
    second.refresh_from_db()
    assert (second.state, second.stage_index) == (VersionState.IN_REVIEW, 1)

    # 6. The author holds the legal role but may not decide their own version.
    journey.logout()
    journey.login(editor.username)
    page.goto(QUEUE)
    assert page.locator(f"tr.queue-entry[data-version='{second.pk}']").count() == 0
    assert "Nothing is waiting for your decision." in page.locator("#result_list").inner_text()
    journey.shot("author's queue does not offer own version")
    page.goto(reverse("admin:approvals_templateversion_review", args=[second.pk]))
    assert "waiting for stage “Legal”" in page.locator("#version-state").inner_text()
    assert page.locator("input[name=decision]").count() == 0
    assert page.locator("input[value='Record decision']").count() == 0
    decisions_before = list(ReviewDecision.objects.filter(version=second).values_list("pk", "hash"))
    # A hand-made POST of an approval, with a valid session, CSRF token and content hash.
    page.evaluate(
        """([hash]) => {
            const form = document.createElement("form");
            form.method = "post";
            const fields = {
                csrfmiddlewaretoken: document.querySelector("[name=csrfmiddlewaretoken]").value,
                decision: "approve",
                comment: "",
                content_hash: hash,
            };
            for (const [name, value] of Object.entries(fields)) {
                const input = document.createElement("input");
                input.type = "hidden";
                input.name = name;
                input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
        }""",
        [second.content_hash],
    )
    page.wait_for_selector("ul.messagelist li.error")
    assert page.locator("ul.messagelist li.error").inner_text() == (
        "Authors cannot decide on their own versions."
    )
    journey.shot("forged approval by the author is refused")
    second.refresh_from_db()
    assert (second.state, second.stage_index) == (VersionState.IN_REVIEW, 1)
    assert (
        list(ReviewDecision.objects.filter(version=second).values_list("pk", "hash"))
        == decisions_before
    )

    # 7. The legal reviewer approves: version 2 is approved, and read-only for its author.
    journey.logout()
    journey.login(legal.username)
    decide(journey, page, second, Decision.APPROVE)
    second.refresh_from_db()
    assert second.state == VersionState.APPROVED
    assert list(
        ReviewDecision.objects.filter(version=second)
        .order_by("sequence")
        .values_list("stage_name", "reviewer__username", "decision")
    ) == [
        ("Editorial", editorial.username, Decision.APPROVE),
        ("Legal", legal.username, Decision.APPROVE),
    ]

    journey.logout()
    journey.login(editor.username)
    page.goto(VERSIONS)
    assert "Approved" in version_row(page, second).inner_text()
    assert "Rejected" in version_row(page, first).inner_text()
    journey.shot("editor sees version 2 approved")
    page.goto(reverse("admin:approvals_templateversion_change", args=[second.pk]))
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("#id_body").count() == 0
    journey.shot("approved version is read-only")
