"""What freezing a campaign paid per recipient and no query needs.

The single-column campaign index (both other indexes start with the campaign), the account
index (no query reads recipients by account), and the database foreign keys to the campaign
and the account, checked once per recipient at commit: the freeze writes both from the
campaign it holds locked and its templates (see CampaignRecipient).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0006_campaign_batch_chain"),
    ]

    operations = [
        migrations.AlterField(
            model_name="campaignrecipient",
            name="account",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="messaging.channelaccount",
                verbose_name="channel account",
            ),
        ),
        migrations.AlterField(
            model_name="campaignrecipient",
            name="campaign",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="recipients",
                to="messaging.campaign",
                verbose_name="campaign",
            ),
        ),
    ]
