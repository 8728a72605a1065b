"""The embedded broker: a consumer never reads a half-written message, and survives a bad one."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from kombu import Connection
from kombu.transport import filesystem

from workers import broker


def _options(root):
    folders = {name: root / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir()
    return {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    }


def _connection(tmp_path, transport="workers.broker:Transport"):
    return Connection("filesystem://", transport=transport, transport_options=_options(tmp_path))


@pytest.fixture
def name(request):
    """A queue name per test: kombu remembers declared exchanges per process, not per folder."""
    return "q" + uuid.uuid4().hex[:8]


def _half_written(queue_folder, queue):
    """What kombu's own ``_put`` leaves in the folder between creating and writing a file."""
    path = queue_folder / f"{0:020d}_00000000-0000-0000-0000-000000000000.{queue}.msg"
    path.write_bytes(b"")
    return path


def test_it_carries_messages_in_order(tmp_path, name):
    with _connection(tmp_path) as conn:
        queue = conn.SimpleQueue(name)
        for n in range(5):
            queue.put({"n": n})
        assert [queue.get(timeout=1).payload["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
        queue.close()


def test_no_consumer_sees_a_message_file_before_it_is_whole(tmp_path, monkeypatch, name):
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        # The moment before the rename: the bytes are written, the name is not yet a message's.
        folder = os.path.dirname(dst)
        seen.append(sorted(n for n in os.listdir(folder) if n.endswith(f".{name}.msg")))
        assert os.path.getsize(src) > 0
        return real_replace(src, dst)

    monkeypatch.setattr(broker.os, "replace", replace)
    with _connection(tmp_path) as conn:
        queue = conn.SimpleQueue(name)
        queue.put({"n": 1})
        assert seen == [[]]
        assert queue.get(timeout=1).payload == {"n": 1}
        queue.close()
    assert not [n for n in os.listdir(tmp_path / "queue") if n.startswith(".part-")]


def test_kombus_own_transport_dies_on_a_half_written_file(tmp_path, name):
    """The failure this module exists for (seen in CI: "Unrecoverable error: JSONDecodeError")."""
    with _connection(tmp_path, transport=filesystem.Transport) as conn:
        channel = conn.default_channel
        _half_written(tmp_path / "queue", name)
        with pytest.raises(json.JSONDecodeError):
            channel._get(name)


def test_a_bad_file_is_moved_aside_and_the_next_message_delivered(tmp_path, caplog, name):
    with _connection(tmp_path) as conn:
        queue = conn.SimpleQueue(name)
        bad = _half_written(tmp_path / "queue", name)
        queue.put({"n": 2})
        assert queue.get(timeout=1).payload == {"n": 2}
        queue.close()
    assert (tmp_path / "rejected" / bad.name).exists()
    assert bad.name in caplog.text and "does not decode" in caplog.text


def test_the_first_binding_table_is_created_whole_and_joined_by_the_next(tmp_path, name):
    with _connection(tmp_path) as conn:
        channel = conn.default_channel
        channel._queue_bind(name, "", "", "q1")
        channel._queue_bind(name, "", "", "q2")
        assert sorted(q.queue for q in channel.get_table(name)) == ["q1", "q2"]
    assert os.listdir(tmp_path / "control") == [f"{name}.exchange"]
