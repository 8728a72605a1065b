"""What a bulk import pays per row beyond the row itself (issue 13).

1. Drops the single-column indexes that a composite index or unique constraint already leads
with (each index costs every imported row one more write):

- ``annotate_candidate.project_id``: candidate_external_id_unique / candidate_project_model;
- ``annotate_candidate.model_name`` (and PostgreSQL's ``_like`` twin): names are looked up
  within a project (candidate_project_model);
- ``annotate_prompt.project_id``: prompt_external_id_unique;
- ``annotate_task.project_id``: the (project, status, -priority, id) index;
- ``annotate_task.prompt_id``: task_unique (prompt, candidate_key);
- ``annotate_taskcandidate.task_id``: taskcandidate_unique (task, candidate).

Only the indexes go: the fields' state changes (``db_index=False``) are applied to the model
state, the database gets ``DROP INDEX`` alone. Left to Django, ``AlterField`` would rebuild
each table on SQLite and drop and re-validate the foreign keys on PostgreSQL.

2. PostgreSQL: no planner statistics for the prompts' and candidates' texts, their HTML and
metadata (``SET STATISTICS 0``). No query compares them with a value the statistics could
estimate (the data browser's substring search gets the default estimate either way), and the
``ANALYZE`` after each import spent most of its time on those wide columns.
"""

import django.db.models.deletion
from django.db import migrations, models

# (index name, table, column): the names Django gave them in 0001_initial.
INDEXES = [
    ("annotate_candidate_model_name_6be5c2e6", "annotate_candidate", "model_name"),
    ("annotate_candidate_project_id_9b07e114", "annotate_candidate", "project_id"),
    ("annotate_prompt_project_id_2b8d49c8", "annotate_prompt", "project_id"),
    ("annotate_task_project_id_ce6b396b", "annotate_task", "project_id"),
    ("annotate_task_prompt_id_6ab08a42", "annotate_task", "prompt_id"),
    ("annotate_taskcandidate_task_id_9970614d", "annotate_taskcandidate", "task_id"),
]
# PostgreSQL's pattern-ops index beside a varchar index (LIKE 'x%' look-ups).
LIKE_INDEX = "annotate_candidate_model_name_6be5c2e6_like"


def drop_indexes(apps, schema_editor):
    quote = schema_editor.quote_name
    for name, _table, _column in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(name)}")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(LIKE_INDEX)}")


def create_indexes(apps, schema_editor):
    quote = schema_editor.quote_name
    for name, table, column in INDEXES:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(table)} ({quote(column)})"
        )
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(LIKE_INDEX)} ON annotate_candidate "
            "(model_name varchar_pattern_ops)"
        )


# Columns without statistics (PostgreSQL).
NO_STATISTICS = {
    "annotate_prompt": ("text", "text_html", "metadata"),
    "annotate_candidate": ("text", "text_html", "metadata"),
}


def _set_statistics(schema_editor, target: int) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    for table, columns in NO_STATISTICS.items():
        alters = ", ".join(f"ALTER COLUMN {quote(c)} SET STATISTICS {target}" for c in columns)
        schema_editor.execute(f"ALTER TABLE {quote(table)} {alters}")


def statistics_off(apps, schema_editor):
    _set_statistics(schema_editor, 0)


def statistics_default(apps, schema_editor):
    _set_statistics(schema_editor, -1)


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0006_candidate_project_model"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
            state_operations=[
                migrations.AlterField(
                    model_name="candidate",
                    name="model_name",
                    field=models.CharField(max_length=200),
                ),
                migrations.AlterField(
                    model_name="candidate",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="candidates",
                        to="annotate.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="prompt",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="prompts",
                        to="annotate.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="tasks",
                        to="annotate.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="prompt",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="tasks",
                        to="annotate.prompt",
                    ),
                ),
                migrations.AlterField(
                    model_name="taskcandidate",
                    name="task",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="slots",
                        to="annotate.task",
                    ),
                ),
            ],
        ),
        migrations.RunPython(statistics_off, statistics_default),
    ]
