"""Sessions read from Redis, kept in the database (``SESSION_ENGINE = "annotate.session_store"``).

Selected in ``config/settings.py`` when the deployment has a Redis (``CELERY_BROKER_URL`` or
``QUORUM_SESSION_REDIS_URL``); the embedded default (SQLite, filesystem broker) keeps Django's
database sessions. Every request reads its session; with this store that is one Redis ``GET``
instead of a database round trip and an ORM query (issue 13: 1.3 ms of a request's CPU).

The database stays the source of truth. The rules, and why Django's ``cached_db`` is not used:

- **Reads never wait on Redis.** The client has connect and read timeouts of
  ``QUORUM_SESSION_REDIS_TIMEOUT_MS`` (50 ms) and no retries; any cache error falls back to the
  database and makes this process skip Redis for ``BACKOFF_SECONDS``, so a frozen Redis costs
  one timeout per process every few seconds, not one per request (``cached_db`` reads with the
  cache's own timeouts and writes after a miss without catching errors).
- **Writes** go to the database first, then to the cache.
- **A logout never leaves a cached session alive once its database row is gone.** ``delete``
  replaces the cached copy with a tombstone (a copy re-read from the database just before
  cannot overwrite it: ``_POPULATE`` sets only an absent or outdated entry), then deletes the
  row. If Redis cannot be reached, the cached copy cannot be touched, so it is made unusable
  instead: every cached entry carries the *cache epoch*, a random token kept in the database
  (a ``django_session`` row of its own, ``EPOCH_KEY``); a cached entry counts only while its
  epoch is the current one. Each process re-reads the epoch at most ``EPOCH_SECONDS`` (1 s)
  after it last read it; a delete that could not reach Redis writes a new epoch and then waits
  ``EPOCH_SECONDS`` before it returns, so by the time the logout answers, every process has
  the new epoch and rejects every copy cached before it, whenever Redis comes back. A save that
  could not update its cached copy writes a new epoch too (without the wait: the copy it left
  is the session's data of a moment ago, not a session that is gone).

  Why an epoch rather than a per-session version or a short TTL: a per-session version in the
  database would be read on every request (the round trip this store removes), and a TTL
  alone lets a logged-out cookie back in for the TTL if Redis returns within it. The epoch
  costs one primary-key read per process a second, and, once per outage, one database read per
  cached session. Session rows deleted outside this store (a shell) stay cached until their
  copy expires, at most ``CACHE_SECONDS``; ``bump_epoch()`` ends every cached copy at once.

The cached value is the row's encoded ``session_data`` (signed with ``SECRET_KEY``, decoded as
the database's), so whoever can write to Redis cannot forge a session.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.backends.db import SessionStore as DBStore
from django.core.exceptions import PermissionDenied
from django.utils import timezone

log = logging.getLogger("quorum.sessions")

PREFIX = "quorum:session:"
TOMBSTONE = b"-"
# The database row holding the cache epoch: not a key Django generates (32 letters and digits).
EPOCH_KEY = "quorum-session-cache-epoch"
EPOCH_SECONDS = 1.0
BACKOFF_SECONDS = 5.0
# The longest a copy stays cached (also bounded by the session's own expiry).
CACHE_SECONDS = 600
# A tombstone outlives any copy a slow reader could still be writing.
TOMBSTONE_SECONDS = 600

# Sets the copy read from the database only where there is none or an outdated one (another
# epoch): never over a tombstone, nor over a copy a save has just written in this epoch.
_POPULATE = """
local v = redis.call('GET', KEYS[1])
if v == false or (v ~= '-' and string.sub(v, 1, string.len(ARGV[2])) ~= ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
"""


class _State:
    """Per process: the Redis client, the back-off and the epoch last read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client = None
        self.client_url: str | None = None
        self.populate = None
        self.down_until = 0.0
        self.epoch: str | None = None
        self.epoch_read_at = float("-inf")


_state = _State()


def _redis_url() -> str:
    return getattr(settings, "QUORUM_SESSION_REDIS_URL", "") or ""


def _client():
    """The process's Redis client (``None`` when none is configured); rebuilt if the URL moved."""
    url = _redis_url()
    if not url:
        return None
    if _state.client is None or _state.client_url != url:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        timeout = getattr(settings, "QUORUM_SESSION_REDIS_TIMEOUT_MS", 50) / 1000
        with _state.lock:
            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                health_check_interval=0,
            )
            _state.populate = client.register_script(_POPULATE)
            _state.client, _state.client_url = client, url
    return _state.client


def _usable_client():
    """The client, or ``None`` while this process backs off after an error."""
    if time.monotonic() < _state.down_until:
        return None
    return _client()


def _failed(what: str, exc: BaseException) -> None:
    _state.down_until = time.monotonic() + BACKOFF_SECONDS
    log.warning(
        "session cache: %s failed (%s); database only for %.0f s", what, exc, BACKOFF_SECONDS
    )


def _model():
    from django.contrib.sessions.models import Session

    return Session


def current_epoch() -> str:
    """The cache epoch, read from the database when the one held is ``EPOCH_SECONDS`` old."""
    now = time.monotonic()
    if _state.epoch is not None and now - _state.epoch_read_at < EPOCH_SECONDS:
        return _state.epoch
    Session = _model()
    row = Session.objects.filter(session_key=EPOCH_KEY).values_list("session_data", flat=True)
    epoch = next(iter(row), None)
    if epoch is None:
        epoch = _write_epoch(create=True)
    # The time taken before the read: the epoch seen is at least as new as that moment.
    _state.epoch, _state.epoch_read_at = epoch, now
    return epoch


def _write_epoch(*, create: bool = False) -> str:
    from django.db import IntegrityError, transaction

    Session = _model()
    epoch = secrets.token_hex(8)
    expire = datetime(9999, 1, 1, tzinfo=UTC)
    if create:
        try:
            with transaction.atomic():
                Session.objects.create(
                    session_key=EPOCH_KEY, session_data=epoch, expire_date=expire
                )
        except IntegrityError:  # another process created it first
            return Session.objects.get(session_key=EPOCH_KEY).session_data
        return epoch
    Session.objects.update_or_create(
        session_key=EPOCH_KEY, defaults={"session_data": epoch, "expire_date": expire}
    )
    _state.epoch, _state.epoch_read_at = epoch, time.monotonic()
    return epoch


def bump_epoch() -> None:
    """Makes every copy cached so far unusable (within ``EPOCH_SECONDS`` in every process)."""
    _write_epoch()


def _ttl_ms(expire_date: datetime) -> int:
    left = (expire_date - timezone.now()).total_seconds()
    return int(min(left, CACHE_SECONDS) * 1000)


def _entry(epoch: str, expire_date: datetime, session_data: str) -> bytes:
    return f"{epoch}|{expire_date.timestamp():.0f}|{session_data}".encode()


class SessionStore(DBStore):
    """Django's database session store, read through Redis (see the module's docstring)."""

    cache_key_prefix = PREFIX

    def _cache_key(self, session_key: str) -> str:
        return self.cache_key_prefix + session_key

    def load(self):
        key = self.session_key
        if key == EPOCH_KEY:  # a cookie naming the epoch's row is no session
            self._session_key = None
            return {}
        client = _usable_client() if key else None
        if client is None:
            return super().load()
        epoch = current_epoch()
        try:
            raw = client.get(self._cache_key(key))
        except Exception as exc:  # any cache error: the database answers
            _failed("read", exc)
            return super().load()
        if raw is not None and raw != TOMBSTONE:
            session = self._cached(raw, epoch)
            if session:
                return session
        row = self._get_session_from_db()
        if row is None:
            return {}
        ttl = _ttl_ms(row.expire_date)
        if raw != TOMBSTONE and ttl > 0:
            try:
                _state.populate(
                    keys=[self._cache_key(key)],
                    args=[_entry(epoch, row.expire_date, row.session_data), f"{epoch}|", ttl],
                    client=client,
                )
            except Exception as exc:
                _failed("populate", exc)
        return self.decode(row.session_data)

    def _cached(self, raw: bytes, epoch: str) -> dict | None:
        """The session in a cached entry of this epoch, unexpired and correctly signed."""
        try:
            got_epoch, expires, data = raw.decode().split("|", 2)
            if got_epoch != epoch or float(expires) <= time.time():
                return None
        except ValueError:  # not an entry of this store
            return None
        return self.decode(data)

    def save(self, must_create=False):
        if self.session_key is None:
            return self.create()
        super().save(must_create=must_create)
        if not _redis_url():
            return
        key = self.session_key
        client = _usable_client()
        epoch = current_epoch()
        try:
            if client is None:
                raise ConnectionError("backing off after an earlier error")
            expire_date = self.get_expiry_date()
            data = self.encode(self._get_session(no_load=must_create))
            ttl = _ttl_ms(expire_date)
            if ttl > 0:
                client.set(self._cache_key(key), _entry(epoch, expire_date, data), px=ttl)
            else:
                client.delete(self._cache_key(key))
        except Exception as exc:
            if client is not None:
                _failed("write", exc)
            if not must_create:
                # The cached copy may hold the data before this save: end it (a new session has
                # no copy to end).
                bump_epoch()

    def delete(self, session_key=None):
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        if _redis_url():
            # Tried even while backing off: a logout is rare and must not leave a copy behind.
            client = _client()
            try:
                client.set(self._cache_key(session_key), TOMBSTONE, px=TOMBSTONE_SECONDS * 1000)
            except Exception as exc:
                _failed("delete", exc)
                super().delete(session_key)
                bump_epoch()
                # Until every process has read the new epoch, one could still serve the copy.
                time.sleep(EPOCH_SECONDS + 0.05)
                return
        super().delete(session_key)

    @classmethod
    def clear_expired(cls):
        cls.get_model_class().objects.filter(expire_date__lt=timezone.now()).exclude(
            session_key=EPOCH_KEY
        ).delete()

    # The async paths go through the synchronous ones, so none bypasses the cache.
    async def aload(self):
        return await sync_to_async(self.load)()

    async def asave(self, must_create=False):
        return await sync_to_async(self.save)(must_create)

    async def adelete(self, session_key=None):
        return await sync_to_async(self.delete)(session_key)

    @classmethod
    async def aclear_expired(cls):
        return await sync_to_async(cls.clear_expired)()


class UserBackend(ModelBackend):
    """Django's ``ModelBackend``, its read of the session's user compiled once per process.

    Every authenticated request reads its user (``django.contrib.auth.get_user`` ->
    ``get_user(user_id)``); the ORM compiled that ``SELECT`` each time (0.44-0.58 ms of CPU a
    request, issue 13). This runs the same statement from ``annotate.prepared_queries``: still
    one database read per request, nothing cached, so a password change (the session's hash no
    longer matches), a deactivation or a deleted user counts at the next request exactly as
    with ``ModelBackend``. Permissions and ``aget_user`` are ``ModelBackend``'s.

    A login is ``ModelBackend``'s check, made final: credentials it refuses (a wrong password,
    an unknown user, an inactive account) end ``authenticate()`` here (``PermissionDenied``,
    which Django turns into the one ``user_login_failed`` signal the throttle counts). The
    backends listed after this one (``ModelBackend``, kept for sessions that name it) would
    check the same user table with the same hasher, so a refused password was hashed twice:
    twice the CPU, and for nothing. Every attempt now runs the hasher once, for an unknown user
    too (``ModelBackend`` hashes the password anyway: the same time as a wrong password).
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username, password, **kwargs)
        if user is None and password is not None:
            if username is None:
                username = kwargs.get(self._username_field())
            if username is not None:  # ModelBackend ran the hasher: the verdict is final
                raise PermissionDenied
        return user

    @staticmethod
    def _username_field() -> str:
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD

    def get_user(self, user_id):
        from annotate.prepared_queries import loaded

        try:
            user_id = int(user_id)
        except (TypeError, ValueError):
            return None
        if not -(2**31) <= user_id < 2**31:  # auth_user.id's range: no such user
            return None
        rows = _user_by_id().named_rows(user_id=user_id)
        if not rows:
            return None
        from django.contrib.auth import get_user_model

        user = loaded(get_user_model(), rows[0])
        return user if self.user_can_authenticate(user) else None


_user_query: list = []


def _user_by_id():
    if not _user_query:
        from django.contrib.auth import get_user_model

        from annotate.prepared_queries import PreparedQuery

        User = get_user_model()
        _user_query.append(
            PreparedQuery(lambda user_id: User._default_manager.filter(pk=user_id), user_id="id32")
        )
    return _user_query[0]


def reset_for_tests() -> None:
    """Forgets the process's client, back-off and epoch."""
    _state.client = _state.client_url = _state.populate = None
    _state.down_until = 0.0
    _state.epoch, _state.epoch_read_at = None, float("-inf")


__all__ = ["SessionStore", "UserBackend", "bump_epoch", "current_epoch"]
