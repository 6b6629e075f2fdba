"""Indexes for contact lists at a million rows: the language filter, and trigram indexes for
the contact search (name, organisation, address contains a text).

PostgreSQL only: `icontains` compiles to UPPER(column::text) LIKE UPPER('%term%'), which a
pg_trgm GIN index on UPPER(column) answers without reading every row. Other databases keep
searching by scan. The indexes are built CONCURRENTLY (hence a non-atomic migration), so a
table with millions of contacts stays writable while they are built.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState

# (index name, table, column) of every trigram index this migration adds.
TRIGRAM_INDEXES = [
    ("crm_contact_first_name_trgm", "crm_contact", "first_name"),
    ("crm_contact_last_name_trgm", "crm_contact", "last_name"),
    ("crm_contact_organisation_trgm", "crm_contact", "organisation"),
    ("crm_contactpoint_address_trgm", "crm_contactpoint", "address"),
]


class PostgreSQLOnlySQL(migrations.RunSQL):
    """Raw SQL that runs on PostgreSQL and is a no-op elsewhere (the SQLite default)."""

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm", "0005_idempotency_records"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(
                fields=["team", "language", "-created_at", "-id"], name="crm_contact_team_language"
            ),
        ),
        TrigramExtension(),
        *(
            PostgreSQLOnlySQL(
                sql=f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                f"ON {table} USING gin (UPPER({column}) gin_trgm_ops)",
                reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
            )
            for name, table, column in TRIGRAM_INDEXES
        ),
    ]
