"""What every imported contact paid for and no query reads.

Indexes: the contact's and the point's own team indexes (every contact index and the points'
unique address constraint lead with the team), the points' creation time, the LIKE-shaped
twin of the address hash index (only compared for equality), and in the history tables
everything but the object and contact ids, the history date and the user. Foreign keys
checked at commit once per row: the history tables' acting user, and the point's team (a
copy of its contact's, which is checked).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0006_contact_list_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="contact",
            name="team",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="contacts",
                to="crm.team",
                verbose_name="team",
            ),
        ),
        migrations.AlterField(
            model_name="contactpoint",
            name="address_hash",
            field=models.CharField(default="", editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="contactpoint",
            name="created_at",
            field=models.DateTimeField(auto_now_add=True, verbose_name="created at"),
        ),
        migrations.AlterField(
            model_name="contactpoint",
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
            model_name="historicalcontact",
            name="created_at",
            field=models.DateTimeField(blank=True, editable=False, verbose_name="created at"),
        ),
        migrations.AlterField(
            model_name="historicalcontact",
            name="history_user",
            field=models.ForeignKey(
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="historicalcontact",
            name="team",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="crm.team",
                verbose_name="team",
            ),
        ),
        migrations.AlterField(
            model_name="historicalcontactpoint",
            name="address_hash",
            field=models.CharField(default="", editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="historicalcontactpoint",
            name="created_at",
            field=models.DateTimeField(blank=True, editable=False, verbose_name="created at"),
        ),
        migrations.AlterField(
            model_name="historicalcontactpoint",
            name="history_user",
            field=models.ForeignKey(
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="historicalcontactpoint",
            name="team",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="crm.team",
            ),
        ),
        migrations.AddIndex(
            model_name="contactpoint",
            index=models.Index(fields=["address_hash"], name="crm_contactpoint_address_hash"),
        ),
    ]
