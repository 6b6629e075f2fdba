"""Drop the database foreign keys of the ledger and its projection that the ledger's writer
already guarantees, once per batch; ConsentEvent.contact keeps its key (see the comment there).

Each foreign key checks every inserted row on its own at commit, which was most of the
database's time in a bulk import. The columns and their indexes stay; reversing adds the
constraints again (and checks the rows written meanwhile).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0004_event_and_projection_redundant_indexes"),
        ("crm", "0006_contact_list_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="consent",
            name="contact",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="consents",
                to="crm.contact",
                verbose_name="contact",
            ),
        ),
        migrations.AlterField(
            model_name="consent",
            name="last_event",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="consent.consentevent",
                verbose_name="deciding event",
            ),
        ),
        migrations.AlterField(
            model_name="consent",
            name="purpose",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="consents",
                to="consent.purpose",
                verbose_name="purpose",
            ),
        ),
        migrations.AlterField(
            model_name="consent",
            name="team",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="crm.team",
                verbose_name="team",
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="evidence",
            field=models.OneToOneField(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="event",
                to="consent.consentevidence",
                verbose_name="evidence",
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="purpose",
            field=models.ForeignKey(
                db_constraint=False,
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
                db_constraint=False,
                db_index=False,
                editable=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="crm.team",
            ),
        ),
        migrations.AlterField(
            model_name="consentevidence",
            name="consent_text",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="consent.consenttext",
                verbose_name="consent text",
            ),
        ),
    ]
