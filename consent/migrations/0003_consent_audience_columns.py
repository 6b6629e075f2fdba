"""Audience columns on the Consent projection: the contact's team and whether it is reachable.

Filled for the existing rows with the same rule as consent.services.reachability (frozen here,
on the historical models). Reversing drops the index and the columns again.
"""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Case, Exists, OuterRef, Q, Subquery, Value, When


def fill_audience_columns(apps, schema_editor):
    Consent = apps.get_model("consent", "Consent")
    Suppression = apps.get_model("consent", "Suppression")
    Contact = apps.get_model("crm", "Contact")
    ContactPoint = apps.get_model("crm", "ContactPoint")
    contact = Contact.objects.filter(pk=OuterRef("contact_id"))
    suppressed = Suppression.objects.filter(address_hash=OuterRef("address_hash"))
    open_address = ContactPoint.objects.filter(
        contact_id=OuterRef("contact_id"), channel=OuterRef("channel")
    ).filter(~Exists(suppressed))
    processable = contact.filter(is_restricted=False, erased_at__isnull=True)
    Consent.objects.using(schema_editor.connection.alias).update(
        team_id=Subquery(contact.values("team_id")[:1]),
        reachable=Case(
            When(Q(Exists(processable)) & Q(Exists(open_address)), then=Value(True)),
            default=Value(False),
        ),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0002_audience_index"),
        ("crm", "0002_contact_restriction_erasure_address_hash"),
    ]

    operations = [
        migrations.AddField(
            model_name="consent",
            name="team",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="crm.team",
                verbose_name="team",
            ),
        ),
        migrations.AddField(
            model_name="consent",
            name="reachable",
            field=models.BooleanField(
                db_default=False, default=False, editable=False, verbose_name="reachable"
            ),
        ),
        migrations.RunPython(fill_audience_columns, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="consent",
            index=models.Index(
                condition=models.Q(("reachable", True), ("status", "granted")),
                fields=["purpose", "channel", "team"],
                include=("valid_until", "contact"),
                name="consent_audience_reachable",
            ),
        ),
    ]
