"""A team's outbound messages of a period, covered by one index for the metrics.

The message figures read, of every outbound message in the period, only its ids, send time,
status, origin, purpose and template version: from this partial index they come without
visiting the table (at 1,000,000 messages a 90-day view otherwise read a quarter of its pages).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0008_metrics_handed_off_index"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("direction", "outbound")),
                fields=["team", "created_at"],
                include=(
                    "id",
                    "conversation",
                    "contact",
                    "sent_at",
                    "status",
                    "origin",
                    "purpose",
                    "template_version",
                ),
                name="msg_message_outbound_period",
            ),
        ),
    ]
