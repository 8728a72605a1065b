"""Querysets of the annotators' hot paths compiled to SQL once per process, run with new values.

Building and compiling a queryset costs more Python than the database spends answering it
(a next-task request spent ~80 % of its time in the ORM). ``PreparedQuery`` builds the queryset
once per database with placeholder values, finds where each placeholder landed among the
SQL's parameters, and from then on runs the stored SQL with the request's values in those
places. The SQL is what the ORM writes; nothing is written by hand.

Placeholders are values no request holds: negative ids, instants in 1901. Only parameters
are replaced; anything the ORM writes into the SQL text itself (a ``LIMIT``) belongs in the
``key``, which compiles a separate copy per value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import QuerySet

_INT_BASE = -(10**12)
# For a 32-bit integer column (an ``AutoField`` such as ``auth_user.id``): the ORM refuses a
# value out of its range on PostgreSQL before any SQL is written.
_INT32_BASE = -(2**31) + 1000
_INSTANT_BASE = datetime(1901, 1, 1, tzinfo=UTC)


class PreparedQuery:
    """``build(**values)`` -> a ``values_list`` queryset of plain columns (ints, strings).

    ``kinds`` names each value: ``"id"`` (an integer), ``"id32"`` (an integer compared with a
    32-bit column) or ``"instant"`` (an aware datetime
    compared with a DateTimeField). Rows come back as the cursor gives them: no converters run,
    so select only columns that need none (integers, text, booleans on PostgreSQL).
    """

    def __init__(self, build: Callable[..., QuerySet], **kinds: str):
        self.build = build
        self.kinds = kinds
        self._compiled: dict[tuple, tuple[str, list[tuple[str | None, Any]]]] = {}
        self._columns: dict[tuple, list[str]] = {}
        self._converters: dict[tuple, list[tuple[int, list, Any]]] = {}

    def _placeholders(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for i, (name, kind) in enumerate(self.kinds.items()):
            if kind == "id":
                values[name] = _INT_BASE - i
            elif kind == "id32":
                values[name] = _INT32_BASE - i
            elif kind == "instant":
                values[name] = _INSTANT_BASE + timedelta(seconds=i + 1, microseconds=i + 1)
            else:
                raise ValueError(f"{name}: unknown kind {kind!r}")
        return values

    def _compile(self, alias: str, key: tuple) -> tuple[str, list[tuple[str | None, Any]]]:
        connection = connections[alias]
        placeholders = self._placeholders()
        queryset = self.build(**placeholders)
        compiler = queryset.query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        selected = [expr for expr, _, _ in compiler.select]
        self._columns[(alias, key)] = [
            _column_name(expr, name) for expr, _, name in compiler.select
        ]
        self._converters[(alias, key)] = [
            (i, converters, expr)
            for i, (converters, expr) in compiler.get_converters(selected).items()
        ]
        by_value: dict[Any, str] = {}
        for name, value in placeholders.items():
            by_value[value] = name
            if self.kinds[name] == "instant":
                by_value[connection.ops.adapt_datetimefield_value(value)] = name
        slots: list[tuple[str | None, Any]] = []
        for param in params:
            name = by_value.get(param) if isinstance(param, int | str | datetime) else None
            slots.append((name, param))
        missing = set(placeholders) - {name for name, _ in slots if name}
        if missing:
            raise RuntimeError(f"placeholders not found among the SQL parameters: {missing}")
        compiled = self._compiled[(alias, key)] = (sql, slots)
        return compiled

    def rows(self, *, key: tuple = (), using: str = "default", **values: Any) -> list[tuple]:
        compiled = self._compiled.get((using, key)) or self._compile(using, key)
        sql, slots = compiled
        connection = connections[using]
        prepared = {
            name: connection.ops.adapt_datetimefield_value(value)
            if self.kinds[name] == "instant"
            else value
            for name, value in values.items()
        }
        params = [prepared[name] if name else constant for name, constant in slots]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def named_rows(
        self, *, key: tuple = (), using: str = "default", **values: Any
    ) -> list[dict[str, Any]]:
        """``rows``, each as a dict by column: ``"<model>.<field attname>"`` for a model's
        column (what ``select_related`` querysets select, in an order the ORM chooses), the
        alias for an annotation or a ``values_list`` name. Unlike ``rows``, values are
        converted as the ORM converts them (JSON parsed, datetimes aware, booleans)."""
        rows = self.rows(key=key, using=using, **values)
        names = self._columns[(using, key)]
        converters = self._converters[(using, key)]
        connection = connections[using]
        named = []
        for raw in rows:
            row = list(raw)
            for i, functions, expression in converters:
                for convert in functions:
                    row[i] = convert(row[i], expression, connection)
            named.append(dict(zip(names, row, strict=True)))
        return named


def _column_name(expression: Any, alias: str | None) -> str:
    target = getattr(expression, "target", None)
    if alias is None and target is not None:
        return f"{target.model._meta.model_name}.{target.attname}"
    return alias or str(expression)


def loaded(model: type, row: dict[str, Any]) -> Any:
    """The instance of ``model`` whose columns a ``named_rows`` row holds, built with
    ``from_db`` as the ORM builds what it loads (the columns it lacks are deferred)."""
    prefix = model._meta.model_name + "."
    names = [f.attname for f in model._meta.concrete_fields if prefix + f.attname in row]
    return model.from_db("default", names, [row[prefix + n] for n in names])


def json_value(raw: Any) -> Any:
    """A JSON column as a raw cursor gives it (text on both backends as Django sets them up)."""
    return json.loads(raw) if isinstance(raw, str | bytes) else raw


def instant_value(raw: Any) -> datetime | None:
    """A DateTimeField column as a raw cursor gives it: text on SQLite, aware on PostgreSQL."""
    if raw is None or isinstance(raw, datetime) and raw.tzinfo is not None:
        return raw
    value = raw if isinstance(raw, datetime) else datetime.fromisoformat(raw)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class PreparedInsert:
    """One row's ``INSERT ... RETURNING`` its primary key, compiled once per database.

    ``insert(instance)`` writes what ``Model.objects.create`` would (every concrete field but
    the auto primary key, timestamps from ``pre_save``), binding each value with its field's
    ``get_db_prep_save`` as the insert compiler does; the first call on a database compiles
    the ORM's SQL for that instance and checks its parameters against these. No signals are
    sent: use it only for models nothing listens to.
    """

    def __init__(self, model: type):
        self.model = model
        meta = model._meta
        self.fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
        self.stamped = [
            bool(getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False))
            for f in self.fields
        ]
        self._sql: dict[str, str] = {}

    def params(self, instance: Any, using: str = "default") -> list:
        connection = connections[using]
        return [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in self.fields]

    def _compile(self, instance: Any, using: str) -> str:
        from django.db.models import sql

        connection = connections[using]
        query = sql.InsertQuery(self.model)
        query.insert_values(self.fields, [instance])
        compiler = query.get_compiler(using=using)
        compiler.returning_fields = [self.model._meta.pk]
        ((text, orm_params),) = compiler.as_sql()
        mine = self.params(instance, using)
        if len(orm_params) != len(mine) or any(
            # A timestamp is the clock's at each pre_save: compared by type only.
            type(a) is not type(b) if stamped else comparable(a) != comparable(b)
            for a, b, stamped in zip(orm_params, mine, self.stamped, strict=True)
        ):
            raise RuntimeError(f"{self.model.__name__}: insert parameters differ from the ORM's")
        if not connection.features.can_return_columns_from_insert:
            raise RuntimeError(f"{connection.vendor}: cannot return the inserted row's key")
        self._sql[using] = text
        return text

    def sql(self, instance: Any, using: str = "default") -> str:
        """The ``INSERT ... RETURNING`` text for ``using``, compiled and checked against the
        ORM's parameters (for ``instance``) at the first call."""
        return self._sql.get(using) or self._compile(instance, using)

    def insert(self, instance: Any, using: str = "default") -> Any:
        from django.db import transaction

        text = self.sql(instance, using)
        # As Model.save: an error leaves the enclosing atomic block marked for rollback.
        with transaction.mark_for_rollback_on_error(using), connections[using].cursor() as cursor:
            cursor.execute(text, self.params(instance, using))
            (instance.pk,) = cursor.fetchone()
        instance._state.adding = False
        instance._state.db = using
        return instance


def comparable(value: Any) -> Any:
    """A bound parameter as compared with another: psycopg's ``Jsonb`` has no equality."""
    return ("json", value.obj) if hasattr(value, "obj") and hasattr(value, "dumps") else value
