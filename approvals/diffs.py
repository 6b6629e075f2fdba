"""What changed between two versions of a template, for reviewers (API and admin).

Each version is written out as labelled lines (subject, header, body, footer, buttons,
variables, validity), so a diff shows which part changed, not only which words.
"""

from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING

from django.utils.translation import gettext

if TYPE_CHECKING:
    from approvals.models import TemplateVersion


def version_lines(version: TemplateVersion | None) -> list[str]:
    """The reviewed content of a version as lines; no version is no lines."""
    if version is None:
        return []
    lines: list[str] = []
    for label, value in (
        (gettext("Subject"), version.subject),
        (gettext("Header"), version.header),
    ):
        if value:
            lines.append(f"{label}: {value}")
    lines.append(f"{gettext('Body')}:")
    lines.extend(version.body.splitlines() or [""])
    if version.footer:
        lines.append(f"{gettext('Footer')}: {version.footer}")
    for button in version.buttons or []:
        lines.append(
            f"{gettext('Button')}: {json.dumps(button, ensure_ascii=False, sort_keys=True)}"
        )
    if version.variables:
        lines.append(f"{gettext('Variables')}: {', '.join(version.variables)}")
    for label, value in (
        (gettext("Valid from"), version.valid_from),
        (gettext("Valid until"), version.valid_until),
    ):
        if value is not None:
            lines.append(f"{label}: {value.isoformat()}")
    return lines


def _label(version: TemplateVersion | None) -> str:
    if version is None:
        return gettext("(no approved version)")
    return gettext("version %(number)s") % {"number": version.number}


def unified_diff(previous: TemplateVersion | None, version: TemplateVersion) -> str:
    """A unified diff from `previous` (the last approved version, or nothing) to `version`."""
    return "\n".join(
        difflib.unified_diff(
            version_lines(previous),
            version_lines(version),
            fromfile=_label(previous),
            tofile=_label(version),
            lineterm="",
        )
    )


def html_diff(previous: TemplateVersion | None, version: TemplateVersion) -> str:
    """A side-by-side HTML table; difflib escapes the content it shows."""
    return difflib.HtmlDiff(wrapcolumn=70).make_table(
        version_lines(previous),
        version_lines(version),
        fromdesc=_label(previous),
        todesc=_label(version),
    )
