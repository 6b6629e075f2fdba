"""Leave out the event and projection indexes no query needs; every index costs each write.

The single-column foreign-key indexes of ConsentEvent (contact, team, purpose) and Consent
(contact, purpose) are prefixes of composite indexes that serve the same lookups, and the
hash's varchar_pattern_ops index (built by unique=True) serves no query; the hash stays unique
through a named constraint. Reversing builds the indexes again.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0003_consent_audience_columns"),
        ("crm", "0006_contact_list_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="consent",
            name="contact",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="consents",
                to="crm.contact",
                verbose_name="contact",
            ),
        ),
        migrations.AlterField(
            model_name="consent",
            name="purpose",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="consents",
                to="consent.purpose",
                verbose_name="purpose",
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="contact",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="consent_events",
                to="crm.contact",
                verbose_name="contact",
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="hash",
            field=models.CharField(editable=False, max_length=64, verbose_name="hash"),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="purpose",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="events",
                to="consent.purpose",
                verbose_name="purpose",
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="team",
            field=models.ForeignKey(
                db_index=False,
                editable=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="crm.team",
            ),
        ),
        migrations.AddConstraint(
            model_name="consentevent",
            constraint=models.UniqueConstraint(
                fields=("hash",), name="consent_consentevent_unique_hash"
            ),
        ),
    ]
