"""Where exports made from the admin and the API are stored, and which files are served.

Exports run into a fresh random directory under MEDIA_ROOT/exports/ (hard to guess should
media ever be served directly); only files of directories this code wrote are downloadable.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Final

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser

from messaging.models import ConversationExport
from messaging.services.exports import conversations_export

EXPORTS_DIR: Final = "exports"


def _exports_root() -> Path:
    return (Path(settings.MEDIA_ROOT) / EXPORTS_DIR).resolve()


def run_export(
    *,
    actor: AbstractBaseUser,
    team_ids: list[int] | None = None,
    contact_id: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> ConversationExport:
    """Run conversations_export into a fresh directory under MEDIA_ROOT/exports/."""
    out_dir = _exports_root() / uuid.uuid4().hex
    return conversations_export(
        actor=actor,
        out_dir=out_dir,
        team_ids=team_ids,
        contact_id=contact_id,
        since=since,
        until=until,
    )


def _export_dir(export: ConversationExport) -> Path | None:
    """The export's directory, if it is one this application wrote (under MEDIA_ROOT)."""
    if not export.location:
        return None
    directory = Path(export.location)
    if not directory.is_absolute():
        directory = Path(settings.MEDIA_ROOT) / directory
    directory = directory.resolve()
    # Exports written elsewhere (a command's --out directory) are not served over the web.
    if not directory.is_relative_to(_exports_root()) or not directory.is_dir():
        return None
    return directory


def export_files(export: ConversationExport) -> list[Path]:
    """The files of an export, by name."""
    directory = _export_dir(export)
    if directory is None:
        return []
    return sorted((p for p in directory.iterdir() if p.is_file()), key=lambda p: p.name)


def export_file(export: ConversationExport, name: str) -> Path | None:
    """One file of an export by its name; anything but a listed file name is None."""
    return next((p for p in export_files(export) if p.name == name), None)
