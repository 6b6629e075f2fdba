from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0001_initial"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="consent", name="consent_audience"),
        migrations.AddIndex(
            model_name="consent",
            index=models.Index(
                fields=["purpose", "channel", "status", "contact"],
                include=["valid_until"],
                name="consent_audience",
            ),
        ),
    ]
