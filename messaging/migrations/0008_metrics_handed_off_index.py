"""The handed-off conversations, indexed on their own for the metrics.

The human response times (the figures statement and conversation_metrics) read only
conversations that were handed off, a few per cent: without this index every conversation of
the team (or of all teams) was read to find them.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0007_campaign_recipient_write_costs"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="conversation",
            index=models.Index(
                condition=models.Q(("handed_off_at__isnull", False)),
                fields=["team", "handed_off_at"],
                name="msg_conv_handed_off",
            ),
        ),
    ]
