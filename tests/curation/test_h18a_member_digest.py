"""The JSONL files are written, and their SHA-256 and CRC-32 worked out, by the members'
digester thread (`DeflatedMember` with ``digest=True, write=True``), over the blocks it
deflates: the files on disk are the bytes handed over, and the digests the datasheet lists and
the zip's CRC-32s are theirs, whatever the pieces the writer hands over."""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
import zlib

import pytest

from curation.download import BLOCK_SIZE, DeflatedMembers, deflated_members, iter_download_zip
from tests.curation.builders import fast_passwords  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("write", [False, True])
@pytest.mark.parametrize("chunk", [1, 1000, BLOCK_SIZE, 2 * BLOCK_SIZE + 3])
def test_it_digests_a_member_written_in_any_pieces(tmp_path, chunk, write):
    rng = random.Random(chunk)
    files = {
        "pairs/train.jsonl": rng.randbytes(3 * BLOCK_SIZE + 11) if chunk > 1 else b"x" * 5000,
        "rankings/train.jsonl": rng.randbytes(BLOCK_SIZE),  # exactly one block
        "empty/train.jsonl": b"",
    }
    out_dir = tmp_path / "v1"
    out_dir.mkdir()
    members = DeflatedMembers(out_dir)
    written = {}
    for rel, data in files.items():
        (out_dir / rel).parent.mkdir(parents=True)
        if not write:  # else the member's digester thread writes the file
            (out_dir / rel).write_bytes(data)
        member = written[rel] = members.member(rel, digest=True, write=write)
        for start in range(0, len(data), chunk):
            member.write(memoryview(data)[start : start + chunk])
        member.end()
    digests = {rel: member.sha256() for rel, member in written.items()}
    (out_dir / "datasheet.json").write_text(json.dumps(digests))
    members.finish()
    assert {rel: (out_dir / rel).read_bytes() for rel in files} == files
    assert digests == {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    _, index = deflated_members(out_dir)
    assert {rel: e["crc32"] for rel, e in index.items()} == {
        rel: zlib.crc32(data) for rel, data in files.items()
    }


def test_it_leaves_no_members_and_no_open_copy_when_discarded(tmp_path):
    out_dir = tmp_path / "v1"
    (out_dir / "pairs").mkdir(parents=True)
    members = DeflatedMembers(out_dir)
    member = members.member("pairs/train.jsonl", digest=True, write=True)
    member.write(b"x" * (3 * BLOCK_SIZE))
    members.discard()
    assert member._copy.closed
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".zip-")]


def test_it_refuses_a_digest_from_a_member_made_without_one(tmp_path):
    out_dir = tmp_path / "v1"
    out_dir.mkdir()
    members = DeflatedMembers(out_dir)
    member = members.member("pairs/train.jsonl")
    member.write(b"abc")
    member.end()
    with pytest.raises(ValueError, match="without a digester"):
        member.sha256()
    members.discard()


@pytest.mark.django_db
def test_it_lists_the_digest_of_every_jsonl_file_as_written(_data_dir, ranked_export):
    folder = ranked_export.path
    listed = {f["path"]: f["sha256"] for f in ranked_export.files if "sha256" in f}
    jsonl = [rel for rel in listed if rel.endswith(".jsonl") and "/" in rel]
    assert len(jsonl) >= 3
    for rel in jsonl:
        assert listed[rel] == hashlib.sha256((folder / rel).read_bytes()).hexdigest(), rel
    body = b"".join(iter_download_zip(folder, "x"))
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None  # every member's CRC-32 checked against its bytes
        for rel in jsonl:
            assert archive.read(f"x/{rel}") == (folder / rel).read_bytes()
