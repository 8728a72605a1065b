"""The flags pass's per-vote steps changed by h19f, old and new alternated in one process on
the votes of a kept world: `consensus.loaded_vote` (fields stored one by one vs ``update``;
the old one here with ``zip``, a little cheaper than its keywords), `consensus.vote_records` (records built inline vs one
`_pair_record` call per vote) and the reliability, speed and anomaly checks with the
annotators numbered once for the three (`agreement._annotator_codes`) vs once by each.
CPU per step, fastest and median of the rounds; the results are compared.

    python bench/bench_h19f_passes.py --world var/h19f-world94k [--rounds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _harness import kept_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with kept_world(args.world, prefix="h19f-passes-") as project_id:
        run(project_id, args.rounds)


def run(project_id: int, rounds: int) -> None:
    from annotate.models import Project
    from curation import agreement as A
    from curation import consensus as C
    from curation import selectors

    project = Project.objects.get(pk=project_id)
    data = selectors.project_data(project=project, with_times=False, with_candidates=False)
    loaded = [dict(v.__dict__) for v in data.votes]

    rows = [tuple(d[k] for k in C.Vote.__dataclass_fields__) for d in loaded]

    def old_loaded_vote(*values):
        """`consensus.loaded_vote` before h19f: the fields by ``update``."""
        vote = object.__new__(C.Vote)
        vote.__dict__.update(zip(C.Vote.__dataclass_fields__, values, strict=True))
        return vote

    def fresh(make=C.loaded_vote) -> list:
        return [make(*row) for row in rows]

    def old_records(votes):
        out = []
        for vote in votes:
            kept = vote.__dict__
            record = kept.get("_record")
            if record is None:
                record = C._pair_record(vote) or vote._make_record()
                kept["_record"] = record
            out.append(record)
        return out

    def checks(records, shared: bool):
        """The pass's three users of the annotator numbering, in its order; without
        ``shared`` each numbers the records itself (the code before h19f)."""
        reliability = A.annotator_reliability(records)
        if not shared:
            A._annotator_codes.forget()
        fast = A.too_fast(records)
        if not shared:
            A._annotator_codes.forget()
        anomalous = A.anomalous_voters(records)
        return reliability, [(f.record.__dict__, f.threshold_ms) for f in fast], anomalous

    times: dict[str, list[float]] = {}
    answers: dict[str, object] = {}

    def timed(label, call):
        c0 = time.process_time()
        result = call()
        times.setdefault(label, []).append(time.process_time() - c0)
        return result

    print(f"{len(loaded):,} votes; load average {os.getloadavg()[0]:.1f}", flush=True)
    for r in range(rounds):
        order = [("old", old_records, False), ("new", C.vote_records, True)]
        for label, records_of, shared in order if r % 2 == 0 else order[::-1]:
            make = C.loaded_vote if label == "new" else old_loaded_vote
            votes = timed(f"loaded_vote {label}", lambda: fresh(make))  # noqa: B023
            records = timed(f"vote_records {label}", lambda: records_of(votes))  # noqa: B023
            found = timed(f"checks {label}", lambda: checks(records, shared))  # noqa: B023
            answers[label] = ([list(x.__dict__.items()) for x in records], found)
        assert answers["old"] == answers["new"], "different results"
    print(f"load average {os.getloadavg()[0]:.1f}; results equal")
    for step in ("loaded_vote", "vote_records", "checks"):
        old, new = times[f"{step} old"], times[f"{step} new"]
        print(
            f"{step}: old {min(old) * 1e3:.0f} ms fastest / {statistics.median(old) * 1e3:.0f} "
            f"median, new {min(new) * 1e3:.0f} / {statistics.median(new) * 1e3:.0f} ms CPU; "
            f"new/old {min(new) / min(old):.2f}x fastest, "
            f"{statistics.median(new) / statistics.median(old):.2f}x median"
        )


if __name__ == "__main__":
    main()
