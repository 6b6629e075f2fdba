"""Celery tasks of the crm app: ids in, call a service, retry policy; nothing else."""

from __future__ import annotations

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from crm.imports import contact_import_run


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
)
def run_contact_import(self: Task, contact_import_id: int) -> str:
    """Run or resume one import. Safe to deliver twice: a completed import is left alone and
    an interrupted one continues after its last committed batch."""
    return contact_import_run(contact_import_id=contact_import_id).status
