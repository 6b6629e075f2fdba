"""The contact search reads one document per contact (crm.search) instead of four columns in
two tables: the column, its contents for existing contacts, and one trigram index on it in
place of the four that served the search (PostgreSQL; built CONCURRENTLY, hence a
non-atomic migration, so a table with millions of contacts stays writable meanwhile).
"""

import importlib
from collections import defaultdict

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

from crm.search import SEARCH_DOCUMENTS_SQL, search_document

PostgreSQLOnlySQL = importlib.import_module(
    "crm.migrations.0006_contact_list_indexes"
).PostgreSQLOnlySQL

# (index name, table, column) of the trigram indexes of migration 0006 this one replaces.
REPLACED_TRIGRAM_INDEXES = [
    ("crm_contact_first_name_trgm", "crm_contact", "first_name"),
    ("crm_contact_last_name_trgm", "crm_contact", "last_name"),
    ("crm_contact_organisation_trgm", "crm_contact", "organisation"),
    ("crm_contactpoint_address_trgm", "crm_contactpoint", "address"),
]
BATCH_SIZE = 1000


def fill_search_documents(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(SEARCH_DOCUMENTS_SQL)
        return
    contact_model = apps.get_model("crm", "Contact")
    point_model = apps.get_model("crm", "ContactPoint")
    contacts = contact_model.objects.using(connection.alias).order_by("pk")
    ids = list(contacts.values_list("pk", flat=True))
    for start in range(0, len(ids), BATCH_SIZE):
        batch = list(contacts.filter(pk__in=ids[start : start + BATCH_SIZE]))
        addresses = defaultdict(list)
        for contact_id, address in point_model.objects.using(connection.alias).filter(
            contact_id__in=[contact.pk for contact in batch]
        ).values_list("contact_id", "address"):
            addresses[contact_id].append(address)
        for contact in batch:
            contact.search_document = search_document(contact, addresses[contact.pk])
        contact_model.objects.using(connection.alias).bulk_update(batch, ["search_document"])


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm", "0007_import_write_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="contact",
            name="search_document",
            field=models.TextField(blank=True, db_default="", default="", editable=False),
        ),
        # Going back, the column goes with its contents: nothing to undo.
        migrations.RunPython(fill_search_documents, migrations.RunPython.noop),
        PostgreSQLOnlySQL(
            sql="CREATE INDEX CONCURRENTLY IF NOT EXISTS crm_contact_search_trgm "
            "ON crm_contact USING gin (UPPER(search_document) gin_trgm_ops)",
            reverse_sql="DROP INDEX CONCURRENTLY IF EXISTS crm_contact_search_trgm",
        ),
        *(
            PostgreSQLOnlySQL(
                sql=f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
                reverse_sql=f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                f"ON {table} USING gin (UPPER({column}) gin_trgm_ops)",
            )
            for name, table, column in REPLACED_TRIGRAM_INDEXES
        ),
    ]
