"""Bulk inserts for large imports: ``COPY`` on PostgreSQL, one ``executemany`` on SQLite.

``bulk_create`` builds an SQL string and a parameter list per batch through every field's
``get_db_prep_save``: for an import of 10,000 prompts (110,000 rows) that is most of the
import's time. Here the primary keys are reserved first (one statement), each row's values
are converted once by field type, and the rows go to the database in one stream.

Preconditions: call inside the import's transaction. On SQLite the write lock is held from
the transaction's start (``transaction_mode = IMMEDIATE`` in the settings), so the ids after
the table's highest are free until the commit; on PostgreSQL they come from the table's own
sequence. Other backends fall back to ``bulk_create``. The database still checks every
constraint: a violation raises ``IntegrityError`` and the transaction rolls back whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any

from django.db import connection, models
from django.utils import timezone

_EMPTY = {dict: "{}", list: "[]"}


def _converter(field: models.Field) -> Callable[[Any], Any] | None:
    """How a Python value of ``field`` becomes a parameter (None: as it is)."""
    if isinstance(field, models.JSONField):
        encoder = field.encoder

        # Most rows carry no metadata: "{}" / "[]" without a trip through the encoder.
        def dump(v):
            if v is None:
                return None
            return (not v and _EMPTY.get(type(v))) or json.dumps(v, cls=encoder)

        return dump
    if isinstance(field, models.FileField):
        return lambda v: (v.name if hasattr(v, "name") else v) or ""
    if isinstance(field, models.DateTimeField) and connection.vendor == "sqlite":
        adapt = connection.ops.adapt_datetimefield_value
        last: list = [None, None]  # rows of one import share their creation time

        def convert(v):
            if v is None:
                return None
            if v is not last[0]:
                last[:] = [v, adapt(v)]
            return last[1]

        return convert
    return None


def _reserve_ids(model: type[models.Model], n: int) -> list[int]:
    table = model._meta.db_table
    pk = model._meta.pk.column
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [connection.ops.quote_name(table), pk, n],
            )
            return [row[0] for row in cursor.fetchall()]
        # AUTOINCREMENT tables never reuse an id, even one whose row was deleted.
        cursor.execute(f"SELECT COALESCE(MAX({pk}), 0) FROM {connection.ops.quote_name(table)}")
        top = cursor.fetchone()[0]
        cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
        row = cursor.fetchone()
        start = max(top, row[0] if row else 0) + 1
    return list(range(start, start + n))


def _default(field: models.Field, now) -> Any:
    """What an insert through the ORM stores for a field it was given no value for."""
    if isinstance(field, models.DateTimeField | models.DateField) and (
        field.auto_now or field.auto_now_add
    ):
        return now
    return field.get_default()


def rows_insert(
    model: type[models.Model], fields: Sequence[str], rows: Iterable[Sequence[Any]]
) -> list[int]:
    """Inserts rows (values of ``fields``, by attribute name, in that order); returns their
    new primary keys in row order.

    Concrete fields not in ``fields`` get their default (``auto_now(_add)``: the time of this
    call), the same for every row and converted once.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    if not rows:
        return []
    opts = model._meta
    concrete = [opts.get_field(name) for name in fields]
    named = {f.attname for f in concrete}
    now = timezone.now()
    rest = [
        f
        for f in opts.concrete_fields
        if not f.primary_key and not f.generated and f.attname not in named
    ]
    if connection.vendor not in ("postgresql", "sqlite"):
        names = [*fields, *(f.attname for f in rest)]
        defaults = [_default(f, now) for f in rest]
        objs = [model(**dict(zip(names, [*row, *defaults], strict=True))) for row in rows]
        model._base_manager.bulk_create(objs, batch_size=2000)
        return [obj.pk for obj in objs]
    ids = _reserve_ids(model, len(rows))
    # Column by column: a converter maps one column (C loops, no per-row Python list), and a
    # default is converted once and repeated.
    columns: list[Iterable[Any]] = [ids, *zip(*rows, strict=True)]
    for i, convert in enumerate(map(_converter, concrete), start=1):
        if convert is not None:
            columns[i] = map(convert, columns[i])
    for f in rest:
        convert = _converter(f)
        value = _default(f, now)
        columns.append(repeat(convert(value) if convert is not None else value))
    # repeat() is endless: ids bound the length. A list: the debug cursor (query capture)
    # takes len() of the parameters.
    prepared = list(zip(*columns, strict=False))
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in [opts.pk.column, *(f.column for f in [*concrete, *rest])])
    table = quote(opts.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The raw cursor's errors are psycopg's: wrapped, they are Django's (IntegrityError).
            sql = f"COPY {table} ({names}) FROM STDIN"
            with connection.wrap_database_errors, cursor.cursor.copy(sql) as copy:
                for values in prepared:
                    copy.write_row(values)
        else:
            marks = ", ".join(["%s"] * (1 + len(concrete) + len(rest)))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", prepared)
    return ids


def objects_insert(objs: Sequence[models.Model]) -> None:
    """Inserts unsaved model instances of one model and sets their primary keys, like
    ``bulk_create`` (defaults and ``auto_now(_add)`` filled; no ``save()``, no signals)."""
    if not objs:
        return
    model = type(objs[0])
    now = timezone.now()
    fields = [f for f in model._meta.concrete_fields if not f.primary_key and not f.generated]
    stamped = [
        f.attname
        for f in fields
        if isinstance(f, models.DateTimeField | models.DateField) and (f.auto_now or f.auto_now_add)
    ]
    names = [f.attname for f in fields]
    rows = []
    for obj in objs:
        for name in stamped:  # as their pre_save on an insert
            setattr(obj, name, now)
        rows.append([getattr(obj, name) for name in names])
    ids = rows_insert(model, names, rows)
    alias = connection.alias
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = alias
