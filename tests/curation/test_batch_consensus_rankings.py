"""`curation.batch_consensus` on ranking judgments: a ranking counts as the pairs it orders,
and the batch equals the per-prompt path (`consensus.prompt_consensus` + `exporting._pair_rows`
+ `overruled.overruled_arcs`) on random prompts of rankings (partial, with ties, repeated by
one evaluator) mixed with pair judgments, a whole snapshot built either way, and tables cut
into Arrow chunks writing the same files."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from curation import batch_consensus as BC
from curation import consensus as C
from curation import exporting as E
from curation.overruled import overruled_arcs
from tests.curation.test_batch_consensus import _source as pair_source
from tests.curation.test_batch_consensus import (
    assert_same_consensus,
    denoised_or_left_out,
    group_by_prompt,
    random_weights,
    same_pair_rows,
)

EVALUATORS = [f"ext:crowd:{i}" for i in range(6)]


def _ranking(
    rng: random.Random, cands: list[int], *, tie_rate: float = 0.2
) -> tuple[tuple[int, ...], ...]:
    """A random ranking of 1 to all of ``cands``, now and then with tie groups."""
    chosen = rng.sample(cands, rng.randint(1, len(cands)))
    groups: list[list[int]] = []
    for c in chosen:
        if groups and rng.random() < tie_rate:
            groups[-1].append(c)
        else:
            groups.append([c])
    return tuple(tuple(g) for g in groups)


def _world(seed: int, n_prompts: int = 50) -> tuple[list[C.Vote], dict[int, dict[int, float]]]:
    rng = random.Random(seed)
    votes: list[C.Vote] = []
    scores: dict[int, dict[int, float]] = {}
    jid = cid = 0
    for prompt_id in range(1, n_prompts + 1):
        n = rng.randint(2, 7)
        cands = list(range(cid + 1, cid + n + 1))
        cid += n
        rankings_only = rng.random() < 0.5
        for _ in range(rng.randint(1, 8)):
            jid += 1
            evaluator = rng.choice(EVALUATORS)
            if rankings_only or rng.random() < 0.5:
                ranking = _ranking(rng, cands)
                votes.append(C.Vote(jid, jid, prompt_id, evaluator, ranking=ranking))
            else:
                a, b = rng.sample(cands, 2)
                outcome = rng.choices(["a", "b", "tie", "both_bad"], [5, 5, 1, 1])[0]
                votes.append(C.Vote(jid, jid, prompt_id, evaluator, pair=(a, b), outcome=outcome))
        grid = rng.choice([0.5, None])  # 0.5: exact ties in strength (the per-prompt path's)
        scores[prompt_id] = {
            c: (round(rng.gauss(0, 1) / grid) * grid if grid else rng.gauss(0, 1))
            for c in cands
            if rng.random() > 0.1
        }
    return votes, scores


def _source(votes: list[C.Vote], n_prompts: int) -> E.SnapshotInput:
    return pair_source(votes, n_prompts, max(c for v in votes for c in v.candidates))


@pytest.mark.parametrize("seed", range(8))
def test_it_batches_ranking_judgments_as_the_per_prompt_path_reads_them(seed):
    votes, scores = _world(seed)
    weights, eta = random_weights(random.Random(seed), EVALUATORS)
    by_prompt = group_by_prompt(votes)
    batch = BC.batch_consensus(by_prompt, weights=weights, scores=scores, eta=eta)
    source = _source(votes, len(by_prompt))
    options = E.ExportOptions()
    seen: Counter[str] = Counter()
    for prompt_id, prompt_votes in by_prompt.items():
        ref, got = denoised_or_left_out(batch, prompt_id, prompt_votes, weights, scores)
        if got is None:
            continue
        seen["batched with rankings"] += any(not v.is_pair for v in prompt_votes)
        seen["with tied groups in a ranking"] += any(
            len(g) > 1 for v in prompt_votes for g in v.ranking
        )
        seen["with removed arcs"] += bool(ref.removed_arcs)
        assert_same_consensus(got, ref)
        assert got.removed_arcs == ref.removed_arcs
        assert got.overruled == overruled_arcs(ref, prompt_votes, eta)
        rows_ref, _ = same_pair_rows(source, prompt_id, got, ref, prompt_votes, options)
        seen["pair rows"] += len(rows_ref)
        seen["rows with several judgments"] += sum(len(r.judgment_ids) > 1 for r in rows_ref)
    assert len(seen) == 5 and min(seen.values()) > 0, seen


def test_it_leaves_a_ranking_naming_a_candidate_twice_to_the_per_prompt_path():
    votes = [
        C.Vote(1, 1, 1, "e1", ranking=((1,), (2,), (1,))),
        C.Vote(2, 2, 2, "e1", ranking=((3,), (4,))),
    ]
    scores = {1: {1: 1.0, 2: 0.0}, 2: {3: 1.0, 4: 0.0}}
    batch = BC.batch_consensus(group_by_prompt(votes), weights={}, scores=scores, eta=None)
    assert set(batch) == {2}


@pytest.mark.parametrize("seed", range(3))
def test_a_snapshot_of_rankings_is_the_same_batched_or_per_prompt(seed):
    votes, _ = _world(seed, n_prompts=40)
    source = _source(votes, 40)
    options = E.ExportOptions(splits={"train": 0.8, "test": 0.2}, seed=seed)
    batched = E.build_snapshot(source, options)
    reference = E.build_snapshot(source, options, batched=False)
    assert batched.pairs.num_rows and batched.rankings.num_rows and batched.overruled
    for name in ("pairs", "rankings", "variants"):
        assert getattr(batched, name).to_pylist() == getattr(reference, name).to_pylist(), name
    assert batched.overruled == reference.overruled and batched.media == reference.media
    sheet, ref_sheet = dict(batched.datasheet), dict(reference.datasheet)
    sheet.pop("created_at"), ref_sheet.pop("created_at")
    assert json.dumps(sheet, default=str) == json.dumps(ref_sheet, default=str)


def test_tables_cut_into_chunks_write_the_same_files(monkeypatch, tmp_path):
    import datasets
    import pyarrow.parquet as pq

    votes, _ = _world(1, n_prompts=40)
    source = _source(votes, 40)
    options = E.ExportOptions(splits={"train": 0.7, "test": 0.3}, include_media=False)
    whole = E.build_snapshot(source, options)
    monkeypatch.setattr(E, "TABLE_CHUNK_ROWS", 7)
    cut = E.build_snapshot(source, options)
    assert cut.pairs.column("id").num_chunks > 1 and whole.pairs.column("id").num_chunks == 1
    for name in ("pairs", "rankings", "variants"):
        assert getattr(cut, name).to_pylist() == getattr(whole, name).to_pylist(), name
    for label, snapshot in (("whole", whole), ("cut", cut)):
        (tmp_path / label).mkdir()
        E.write_snapshot(snapshot, tmp_path / label, source, options)
    for path in sorted((tmp_path / "whole").rglob("*.jsonl")):
        rel = path.relative_to(tmp_path / "whole")
        assert (tmp_path / "cut" / rel).read_bytes() == path.read_bytes(), rel
    for name in ("pairs", "rankings", "rankings_4"):
        read = [
            pq.read_table(tmp_path / label / "parquet" / f"{name}.parquet")
            for label in ("whole", "cut")
        ]
        assert read[0].to_pylist() == read[1].to_pylist()
        loaded = [
            datasets.load_from_disk(str(tmp_path / label / "hf" / name))
            for label in ("whole", "cut")
        ]
        assert {s: d.to_list() for s, d in loaded[0].items()} == {
            s: d.to_list() for s, d in loaded[1].items()
        }
