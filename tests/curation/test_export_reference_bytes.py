"""The curated export's files, byte for byte, against the start commit's writer, and read back
the way users read them (json, pyarrow, datasets).

`bench/bench_export_fixture.py` imports two worlds (the peer benchmark's 300 ranked prompts; a
crowd of five annotators mixing rankings, pairs and ties, with an empty answer and a
contrarian) in a real process and builds each world's export denoised and with denoising off.
``tests/curation/data/export_reference.json`` holds the SHA-256 of every file those exports
had when built by commit f1d7ca5's code (a git worktree, the same script, PYTHONHASHSEED=0),
before the pair rows became columns; the build time is masked where a file holds it. No code
under test made it. Regenerated once since, for a meant change: with 9024cb9's code plus only
the escaping of U+2028, U+2029 and U+0085 in the JSONL (h14a), which changed the crowd
world's JSONL files (its prompts hold U+2028) and their digests in the datasheet. A change meant to change the files regenerates it (the script's docstring)
and says why in its commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).parent / "data" / "export_reference.json"
# A pair line: these keys, then "provenance" holding the rest (the documented layout).
PAIR_KEYS = (
    *("id", "split", "prompt_id", "prompt", "image", "video", "chosen", "rejected"),
    *("chosen_image", "rejected_image", "chosen_video", "rejected_video", "chosen_id"),
    *("rejected_id", "chosen_model", "rejected_model", "chosen_kind", "rejected_kind"),
    *("chosen_media", "rejected_media", "margin", "human_margin", "agreement"),
    *("n_judgments", "votes_chosen", "votes_rejected", "ties"),
)
PROVENANCE = ("source", "denoised", "reward_model", "judgment_ids")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The working tree's exports of both worlds: (digests, data folder)."""
    data = tmp_path_factory.mktemp("export-reference")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONHASHSEED")}
    subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_export_fixture.py"),
            f"--data={data}",
            f"--out={data / 'digests.json'}",
            "--keep",
        ],
        check=True,
        cwd=REPO,
        # As bench/bench_export_write.py runs its builds: set iteration order fixed.
        env={**env, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0"},
        capture_output=True,
    )
    return json.loads((data / "digests.json").read_text()), data


# The crowd's denoised export ranks by the joint annotator model's floats (curation/crowd_bt.py,
# tuned on its own terms: its net weights move in the seventh digit when the EM does), so its
# bytes are not pinned here; it is read back below, and `test_batch_consensus_rankings` holds
# its batched build equal to the per-prompt path. The peer world's denoised export (one ranking
# per prompt by one annotator) is the same whatever those digits.
PINNED = ("crowd-raw", "peer-denoised", "peer-raw")


def test_every_file_is_the_start_commits_byte_for_byte(built):
    digests, _ = built
    reference = json.loads(REFERENCE.read_text())
    assert sorted(digests) == sorted(reference)
    for export in PINNED:
        files = reference[export]
        assert len(files) == 24
        differing = sorted(f for f in files.keys() | digests[export].keys()
                           if files.get(f) != digests[export].get(f))  # fmt: skip
        assert differing == [], f"{export}: {differing}"


def _input_rows(path: Path) -> dict[str, dict]:
    lines = path.read_text().splitlines()[1:]  # the first line holds the project's settings
    return {row["id"]: row for row in map(json.loads, lines)}


def _jsonl(path: Path) -> list[dict]:
    # Lines end at "\n" only (a prompt may hold U+2028, which `str.splitlines` splits at).
    with open(path, encoding="utf-8", newline="") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("export", ["peer-denoised", "crowd-denoised", "crowd-raw"])
def test_the_three_formats_hold_the_same_rows_and_the_input_content(built, export):
    import datasets
    import pyarrow.parquet as pq

    _, data = built
    folder = data / export
    world = _input_rows(data / f"{export.split('-')[0]}.jsonl")
    text_of = {c["id"]: c["text"] for row in world.values() for c in row["candidates"]}

    lines = _jsonl(folder / "pairs" / "train.jsonl")
    parquet = pq.read_table(folder / "parquet" / "pairs.parquet").to_pylist()
    hf = datasets.load_from_disk(str(folder / "hf" / "pairs"))["train"].to_list()
    assert len(lines) == len(parquet) == len(hf) > 100
    for line, row, hf_row in zip(lines, parquet, hf, strict=True):
        assert list(line) == [*PAIR_KEYS, "provenance"]
        assert list(line["provenance"]) == list(PROVENANCE)
        as_line = {k: row[k] for k in PAIR_KEYS} | {"provenance": {k: row[k] for k in PROVENANCE}}
        assert line == as_line
        assert hf_row == row
        # The content is the input's: texts by id, the prompt, the row id.
        prompt = world[line["prompt_id"]]
        assert line["prompt"] == prompt["prompt"]
        assert line["chosen"] == text_of[line["chosen_id"]]
        assert line["rejected"] == text_of[line["rejected_id"]]
        assert line["chosen"].strip() and line["rejected"].strip()
        assert line["id"] == f"{line['prompt_id']}:{line['chosen_id']}>{line['rejected_id']}"
        # A pair row is a human preference the export keeps: counts that add up, at least
        # one judgment that way, the net human preference that way.
        assert line["votes_chosen"] + line["votes_rejected"] + line["ties"] == line["n_judgments"]
        assert line["votes_chosen"] >= 1 and line["human_margin"] > 0
        assert len(line["provenance"]["judgment_ids"]) == line["n_judgments"]
        assert line["provenance"]["denoised"] == export.endswith("denoised")
        assert (line["agreement"] is None) == (line["n_judgments"] < 2)

    rankings = _jsonl(folder / "rankings" / "train.jsonl")
    parquet = pq.read_table(folder / "parquet" / "rankings.parquet").to_pylist()
    assert [{"prompt": r["prompt"], "responses": r["responses"], "rankings": r["rankings"]}
            for r in parquet] == rankings  # fmt: skip
    if export == "peer-denoised":
        # One annotator's full ranking per prompt: the export ranks as they did.
        by_text = {text: cid for cid, text in text_of.items()}
        assert len(rankings) == len(world)
        for line in rankings:
            ids = [by_text[t] for t in line["responses"]]
            human = [g[0] for g in world[ids[0].split("-")[0]]["judgments"][0]["ranking"]]
            assert line["rankings"] == [human.index(c) + 1 for c in ids]
        for line in lines:
            human = [g[0] for g in world[line["prompt_id"]]["judgments"][0]["ranking"]]
            assert human.index(line["chosen_id"]) < human.index(line["rejected_id"])
        assert len(lines) == 6 * len(world)  # every pair of four candidates
