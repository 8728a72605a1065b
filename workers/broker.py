"""The embedded broker: kombu's ``filesystem://`` transport with atomic message files.

kombu 5.7's filesystem transport creates a message file empty, then locks and writes it. A
worker polling the folder in between moves the empty file away, reads nothing and dies with
``JSONDecodeError`` ("Unrecoverable error"); the message is lost with it. The same window exists
when an exchange's binding table is first created.

Here a message is written under a name no consumer matches, flushed to disk, then renamed into
place (a rename is atomic within one folder), so a consumer sees a whole message or none. A file
that still does not decode (a disk error, a hand-edited queue) is moved aside to
``<queue folder>/../rejected/`` with an error in the log instead of stopping the worker.

Selected by ``CELERY_BROKER_TRANSPORT`` in ``config/settings.py`` whenever the broker URL is
``filesystem://``; the folders and options are kombu's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from queue import Empty
from time import monotonic_ns

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

# Files being written carry this prefix; kombu's consumers match ``<stamp>_<uuid>.<queue>.msg``
# by the text after the first dot, which a ``.part-`` name never equals.
_PARTIAL_PREFIX = ".part-"


def _write_atomically(folder: str, final_name: str, data: bytes) -> None:
    """Write ``data`` to ``folder/final_name`` so that readers see all of it or no file."""
    fd, tmp_path = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, os.path.join(folder, final_name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise


class Channel(filesystem.Channel):
    """kombu's filesystem channel with atomic puts and a consumer that survives a bad file."""

    def _put(self, queue, payload, **kwargs):
        # Consumers take files in name order: a fixed-width nanosecond stamp keeps publishing order
        # (kombu's millisecond stamp orders messages of one millisecond at random).
        filename = f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        try:
            _write_atomically(self.data_folder_out, filename, str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise ChannelError(
                f"Cannot add file {filename!r} to directory {self.data_folder_out!r}"
            ) from exc

    def _get(self, queue):
        queue_find = f"{queue}.msg"
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != queue_find:
                continue
            processed_folder = (
                str(self.processed_folder) if self.store_processed else tempfile.gettempdir()
            )
            source = os.path.join(self.data_folder_in, filename)
            try:
                # The move is the claim: of several consumers, one wins it.
                shutil.move(source, processed_folder)
            except OSError:
                continue
            path = os.path.join(processed_folder, filename)
            try:
                with open(path, "rb") as handle:
                    payload = handle.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {path!r} from queue.") from exc
            try:
                message = loads(bytes_to_str(payload))
            except (ValueError, UnicodeDecodeError) as exc:
                self._reject_file(path, filename, exc)
                continue
            if not self.store_processed:
                os.remove(path)
            return message
        raise Empty()

    def _reject_file(self, path: str, filename: str, exc: Exception) -> None:
        rejected = os.path.join(os.path.dirname(os.path.abspath(self.data_folder_in)), "rejected")
        os.makedirs(rejected, exist_ok=True)
        try:
            shutil.move(path, os.path.join(rejected, filename))
            where = os.path.join(rejected, filename)
        except OSError:
            where = path
        logger.error(
            "broker: message file %s does not decode (%s); moved to %s", filename, exc, where
        )

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        if not file.exists():
            # First binding: create the table whole, or join the one another process made.
            row = [filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")]
            fd, tmp_path = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, dir=self.control_folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(str_to_bytes(dumps(row)))
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(tmp_path, file)
                    return
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp_path)
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    Channel = Channel
