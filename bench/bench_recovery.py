"""Recovery benchmark: does the denoised export recover the hidden order better than
majority vote? Measured through the real export path (database rows -> ``export_build`` ->
the export's Parquet files), at 0-40% noise.

Worlds (simulated here, hidden quality per candidate ~ N(0, 1), ground truth kept in memory):

- ``rank4``: prompts with N=4 candidates; 3 annotators from a pool of 12 rank each task fully
  (MR2Bench-Image-like). An annotator with flip rate f is Thurstonian: quality + Gaussian
  noise scaled so that a share f of pairs comes out flipped (f = 0.5: a random order).
- ``demo``: the demo world's MR2Bench-scale prompts (``annotate.demo_world``, 19 models of
  different skill) with their hidden ground-truth qualities, judged as in ``sparse``.
- ``sparse``: prompts with 19 candidates; 20 pairwise judgments per prompt over random pairs
  from a panel of 3-5 annotators out of 30 (MR2Bench-Video-like); a judgment is flipped with
  the annotator's flip rate. Candidate j of every prompt comes from model ``c<j>``, and its
  quality is drawn afresh per prompt: model identity says nothing about quality.
- ``models``: ``sparse`` where model identity predicts quality: candidate j's quality is
  ``sqrt(s) * skill_j + sqrt(1 - s) * N(0, 1)``, a share ``s`` (``--model-share``, default
  0.7) of its variance the model's skill, the same on every prompt.

Noise level p = the expected share of flipped judgments. Two crowds:

- ``mixed`` (the realistic case): half of the noise is honest mistakes (careful annotators
  flip p/2 of their judgments), half is spam (a share of annotators answers at random, chosen
  so the overall flip rate is p).
- ``uniform``: every annotator flips exactly p (nothing to learn about who to trust).

A simulated reward model scores every candidate: hidden quality + Thurstonian noise scaled
so that a share ``f`` of all candidate pairs comes out flipped. Its quality is a parameter,
swept over f = 17 / 25 / 35 / 39 / 50 % (the trained demo reward model, top-1 0.45 at chance
0.27, sits near 35-39 %; 50 % is a random scorer). One noise draw per candidate is shared by
every f (common random numbers), and the world, the judgments and every baseline are the same
whatever f is: only the reward model's rows change between its exports.

Methods, all scored against the hidden order per prompt (mean over prompts), on the
candidates some judgment mentions:

- majority vote: per pair, the side with more raw votes; ranked by Copeland score;
- plain Bradley-Terry on the raw votes (`curation.graph.bradley_terry_scores`);
- export, no denoise: reliability-weighted majority (``--no-denoise``);
- denoised export: the joint annotator model's ranking (`curation.crowd_bt`: Crowd-BT with a
  position term over the whole project, EM on leave-one-out margins), no reward model;
- crowd-kit's ``BradleyTerry`` (per prompt) and ``NoisyBT`` (one fit over the project, with
  per-worker skill and bias): the maintained reference aggregators (pairwise worlds);
- BT, prior chosen on held-out votes: the joint model's strengths without its annotator model
  (every vote weight 1), to show what the prior's choice alone is worth (pairwise worlds);
- reward model alone: its scores' order, no human judgment;
- denoised export + RM: the export with the reward model as an evaluator (``--rm-evaluator``):
  its scores centre the strengths' prior, weighted as the humans' held-out votes decide.
- denoised export + model prior (``--prior``): the export with ``model_prior`` on
  (`curation.prior`): strength = model strength + prompt deviation, strong human consensus a
  hard constraint. With it, a second table: how often each export orders a *clear human
  consensus* (a pair judged by two or more annotators, all the same way) against it, how
  often that consensus was right, and how often the prior, before the constraint, contradicted
  a strong consensus (the export's datasheet figure: two or more reliable annotators).

Metrics: **pairwise accuracy** (primary: share of candidate pairs ordered as in the truth, a
predicted tie counts one half), Kendall tau-b (which rewards leaving pairs tied), and the
share of pairs the method orders at all. Also the accuracy of the exported pairs (share whose
chosen response is truly better): what a reward model would be trained on.

    python bench/bench_recovery.py [--prompts 200] [--seeds 0,1,2] [--quick]
        [--workloads sparse,models,demo,rank4] [--crowds mixed,uniform]
        [--rm-flips 0.17,0.25,...|none] [--prior] [--model-share 0.7] [--no-references]

The default (sparse world, mixed crowd, 200 prompts, 3 seeds) took 690 s while a second run
(``--workloads demo``) shared the machine's 2 cores; ``--quick`` (100 prompts, one seed) 60 s.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4)
RM_FLIPS = (0.17, 0.25, 0.35, 0.39, 0.50)
MODEL_SHARE = 0.7


@dataclass
class World:
    name: str
    quality: dict[str, float]  # candidate external id -> hidden quality
    prompts: dict[str, list[str]]  # prompt external id -> candidate external ids


def thurstone_scale(flip: float) -> float:
    """Noise s.d. giving the wanted flip rate for qualities ~ N(0, 1) (0.5: infinite)."""
    return math.tan(math.pi * min(flip, 0.4999))


def crowd(rng: np.random.Generator, size: int, p: float, kind: str) -> np.ndarray:
    """Flip rate per annotator with mean p."""
    if kind == "uniform" or p == 0:
        return np.full(size, p)
    careful = p / 2
    spam_share = (p - careful) / (0.5 - careful)
    n_spam = int(round(spam_share * size))
    rates = np.full(size, careful)
    rates[rng.choice(size, n_spam, replace=False)] = 0.5
    # Rescale the careful ones so the mean is exactly p despite rounding the spammer count.
    if size > n_spam:
        rates[rates < 0.5] = max(0.0, (p * size - 0.5 * n_spam) / (size - n_spam))
    return rates


def _demo_truth(n_prompts: int, seed: int) -> list[tuple[str, list[str], np.ndarray]]:
    """Prompts of the demo world's MR2Bench-scale project with their hidden qualities."""
    from annotate.demo_world import generate_world

    truth = generate_world(seed=seed, scale="mr2bench", prompts=n_prompts).projects[0].truth
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for cid, cand in truth["candidates"].items():
        by_prompt[cand["prompt"]].append(cid)
    values = np.array([c["quality"] for c in truth["candidates"].values()])
    mean, std = values.mean(), values.std() or 1.0
    out = []
    for pid in sorted(by_prompt):
        cands = sorted(by_prompt[pid])
        q = np.array([(truth["candidates"][c]["quality"] - mean) / std for c in cands])
        out.append((pid, cands, q))
    return out


def simulate(
    workload: str, n_prompts: int, p: float, kind: str, seed: int, model_share: float = MODEL_SHARE
) -> tuple[World, list[dict], dict[str, float]]:
    """The world, its judgments (as plain dicts) and a standard-normal draw per candidate
    from which `reward_model_scores` builds reward models of any quality."""
    rng = np.random.default_rng([seed, int(p * 100), 0 if kind == "mixed" else 1, len(workload)])
    pool = 12 if workload == "rank4" else 30
    rates = crowd(rng, pool, p, kind)
    n_cand = 4 if workload == "rank4" else 19
    quality, prompts, judgments = {}, {}, []
    demo = _demo_truth(n_prompts, seed) if workload == "demo" else None
    # Model skill (``models`` world): its own generator, the same for every noise level.
    skill = np.random.default_rng([seed, 11]).normal(size=n_cand)
    for i in range(n_prompts):
        if demo is not None:
            # The demo world's hidden qualities (standardised), judged like ``sparse``.
            pid, cands, q = demo[i]
        else:
            pid = f"{workload}-{i:05d}"
            cands = [f"{pid}-c{j:02d}" for j in range(n_cand)]
            q = rng.normal(size=n_cand)
            if workload == "models":
                q = math.sqrt(model_share) * skill + math.sqrt(1 - model_share) * q
        quality.update(zip(cands, q.tolist(), strict=True))
        prompts[pid] = cands
        if workload == "rank4":
            for annotator in rng.choice(pool, 3, replace=False):
                seen = q + thurstone_scale(rates[annotator]) * rng.normal(size=n_cand)
                if rates[annotator] >= 0.5:
                    seen = rng.normal(size=n_cand)
                order = [cands[j] for j in np.argsort(-seen)]
                judgments.append({"prompt": pid, "annotator": int(annotator), "ranking": order})
        else:
            panel = rng.choice(pool, int(rng.integers(3, 6)), replace=False)
            for _ in range(20):
                a, b = rng.choice(n_cand, 2, replace=False)
                annotator = int(rng.choice(panel))
                better_a = q[a] > q[b]
                if rng.random() < rates[annotator]:
                    better_a = not better_a
                judgments.append(
                    {
                        "prompt": pid,
                        "annotator": annotator,
                        "pair": (cands[a], cands[b]),
                        "outcome": "a" if better_a else "b",
                    }
                )
    # Its own generator: the reward model's noise must not shift the crowd's random draws.
    rm_rng = np.random.default_rng([seed, int(p * 100), 0 if kind == "mixed" else 1, 7])
    rm_noise = {c: float(z) for c, z in zip(quality, rm_rng.normal(size=len(quality)), strict=True)}
    return World(workload, quality, prompts), judgments, rm_noise


def reward_model_scores(world: World, rm_noise: dict[str, float], flip: float) -> dict[str, float]:
    """A simulated reward model flipping a share ``flip`` of candidate pairs."""
    scale = thurstone_scale(flip)
    return {c: world.quality[c] + scale * z for c, z in rm_noise.items()}


def load(world: World, judgments: list[dict], label: str) -> int:
    """Writes the world into the database as a project; returns its id."""
    from bench_curation_scale import bulk_tasks

    from annotate.models import Candidate, Judgment, Project, Prompt
    from annotate.services import candidate_key

    pairwise = world.name in ("sparse", "models", "demo")
    project = Project.objects.create(
        name=f"recovery-{label}-{time.time_ns()}",
        mode="pairwise" if pairwise else "ranking",
        candidates_per_task=2 if pairwise else 4,
        annotators_per_task=1 if pairwise else 3,
    )
    Prompt.objects.bulk_create(
        [Prompt(project=project, external_id=pid, text=f"Question {pid}") for pid in world.prompts]
    )
    prompt_pk = dict(Prompt.objects.filter(project=project).values_list("external_id", "pk"))
    Candidate.objects.bulk_create(
        [
            Candidate(
                project=project, prompt_id=prompt_pk[pid], external_id=c, model_name=c[-3:], text=c
            )
            for pid, cands in world.prompts.items()
            for c in cands
        ],
        batch_size=5000,
    )
    cand_pk = dict(Candidate.objects.filter(project=project).values_list("external_id", "pk"))
    slots: dict[tuple[int, str], tuple[int, ...]] = {}
    for j in judgments:
        members = j["pair"] if pairwise else j["ranking"]
        ids = tuple(cand_pk[c] for c in members)
        if not pairwise:
            ids = tuple(cand_pk[c] for c in world.prompts[j["prompt"]])
        slots.setdefault((prompt_pk[j["prompt"]], candidate_key(ids)), ids)
    task_pk = bulk_tasks(project, slots)
    rows = []
    for n, j in enumerate(judgments):
        common = {
            "project": project,
            "source": "external",
            "source_name": "recovery",
            "external_annotator": f"a{j['annotator']}",
            "idempotency_key": f"recovery:{project.pk}:{n}",
        }
        if pairwise:
            a, b = (cand_pk[c] for c in j["pair"])
            key = (prompt_pk[j["prompt"]], candidate_key((a, b)))
            outcome = j["outcome"]
            if slots[key][0] != a:
                outcome = "b" if outcome == "a" else "a"
            rows.append(Judgment(task_id=task_pk[key], kind="pair", outcome=outcome, **common))
        else:
            ids = tuple(cand_pk[c] for c in world.prompts[j["prompt"]])
            key = (prompt_pk[j["prompt"]], candidate_key(ids))
            ranking = [[cand_pk[c]] for c in j["ranking"]]
            rows.append(Judgment(task_id=task_pk[key], kind="ranking", ranking=ranking, **common))
    Judgment.objects.bulk_create(rows, batch_size=5000)
    return project.pk


def activate_reward_model(project_id: int, scores: dict[str, float], label: str) -> None:
    """Stores a reward model's scores and makes it the project's active one."""
    from annotate.models import Candidate, ModelScore, Project, RewardModel

    project = Project.objects.get(pk=project_id)
    cand_pk = dict(Candidate.objects.filter(project=project).values_list("external_id", "pk"))
    model = RewardModel.objects.create(
        name=f"rm-{project.pk}-{label}", version="1", backend="multi_response", path="-"
    )
    ModelScore.objects.bulk_create(
        [
            ModelScore(candidate_id=cand_pk[c], reward_model=model, score=s)
            for c, s in scores.items()
        ],
        batch_size=10000,
    )
    project.active_reward_model = model
    project.save(update_fields=["active_reward_model"])


# --------------------------------------------------------------------------- metrics


def recovery(
    world: World, rankings: dict[str, list[list[str]]], judged: dict[str, set[str]]
) -> tuple[float, float, float]:
    """Mean pairwise accuracy (tie = 1/2), Kendall tau-b and share of pairs ordered (not
    tied) over the world's prompts.

    Only candidates that some judgment mentions count: nothing can place the others (in the
    sparse world about 2 of 19 per prompt are never judged). A prompt missing from
    ``rankings`` counts as all tied (accuracy 1/2, tau 0).
    """
    accuracy, tau, ordered = [], [], []
    for pid, all_cands in world.prompts.items():
        cands = [c for c in all_cands if c in judged[pid]]
        if len(cands) < 2:
            continue
        position = {c: i for i, group in enumerate(rankings.get(pid, [cands])) for c in group}
        pred, true = [], []
        for i, x in enumerate(cands):
            for y in cands[i + 1 :]:
                px, py = position[x], position[y]
                pred.append(np.sign(py - px))
                true.append(np.sign(world.quality[x] - world.quality[y]))
        pred_a, true_a = np.array(pred), np.array(true)
        accuracy.append(float(np.mean(np.where(pred_a != 0, pred_a == true_a, 0.5))))
        ordered.append(float(np.mean(pred_a != 0)))
        denominator = math.sqrt(np.count_nonzero(pred_a) * np.count_nonzero(true_a))
        tau.append(float(pred_a @ true_a) / denominator if denominator else 0.0)
    return float(np.mean(accuracy)), float(np.mean(tau)), float(np.mean(ordered))


def pair_accuracy(world: World, pairs: list[tuple[str, str]]) -> float:
    return (
        float(np.mean([world.quality[c] > world.quality[r] for c, r in pairs]))
        if pairs
        else math.nan
    )


def raw_votes(world: World, judgments: list[dict]) -> dict[str, list[tuple[str, str]]]:
    votes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for j in judgments:
        if "pair" in j:
            a, b = j["pair"]
            votes[j["prompt"]].append((a, b) if j["outcome"] == "a" else (b, a))
        else:
            order = j["ranking"]
            for i, x in enumerate(order):
                votes[j["prompt"]].extend((x, y) for y in order[i + 1 :])
    return votes


def groups_from_scores(scores: dict[str, float]) -> list[list[str]]:
    groups: list[list[str]] = []
    last = None
    for c in sorted(scores, key=lambda c: (-scores[c], c)):
        if last is not None and math.isclose(scores[c], last, abs_tol=1e-9):
            groups[-1].append(c)
        else:
            groups.append([c])
        last = scores[c]
    return groups


def majority(world: World, votes: dict[str, list[tuple[str, str]]]):
    rankings, pairs = {}, []
    for pid, cands in world.prompts.items():
        wins: dict[tuple[str, str], int] = defaultdict(int)
        for w, loser in votes.get(pid, []):
            wins[(w, loser)] += 1
        score = dict.fromkeys(cands, 0.0)
        for (w, loser), n in list(wins.items()):
            net = n - wins.get((loser, w), 0)
            if net > 0:
                score[w] += 1
                score[loser] -= 1
                pairs.append((w, loser))
        rankings[pid] = groups_from_scores(score)
    return rankings, pairs


def plain_bradley_terry(world: World, votes: dict[str, list[tuple[str, str]]]):
    import networkx as nx

    from curation import graph as G

    rankings = {}
    for pid, cands in world.prompts.items():
        g = nx.DiGraph()
        g.add_nodes_from(cands)
        for w, loser in votes.get(pid, []):
            g.add_edge(w, loser, weight=g[w][loser]["weight"] + 1 if g.has_edge(w, loser) else 1.0)
        rankings[pid] = groups_from_scores(G.bradley_terry_scores(g))
    return rankings


def _pair_rows(judgments: list[dict]) -> list[tuple[str, str, str, int, str]]:
    """``(prompt, winner, loser, annotator, left)`` per pairwise judgment."""
    rows = []
    for j in judgments:
        a, b = j["pair"]
        winner, loser = (a, b) if j["outcome"] == "a" else (b, a)
        rows.append((j["prompt"], winner, loser, j["annotator"], a))
    return rows


def crowdkit_rankings(world: World, judgments: list[dict], noisy: bool):
    """crowd-kit's aggregators, the maintained reference (pairwise worlds only).

    ``BradleyTerry`` has no annotator parameters, so it is fitted per prompt; ``NoisyBT``
    (per-worker skill and left-bias) once over the project, items labelled (prompt, id).
    """
    import pandas as pd
    from crowdkit.aggregation import BradleyTerry, NoisyBradleyTerry

    rows = _pair_rows(judgments)
    frame = pd.DataFrame(
        {
            "worker": [r[3] for r in rows],
            "left": [(r[0], r[4]) for r in rows],
            "right": [(r[0], r[1] if r[4] == r[2] else r[2]) for r in rows],
            "label": [(r[0], r[1]) for r in rows],
        }
    )
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    if noisy:
        fitted = NoisyBradleyTerry(n_iter=100, random_state=0).fit_predict(frame)
        for (pid, cand), value in fitted.items():
            scores[pid][cand] = float(value)
    else:
        frame["prompt"] = [r[0] for r in rows]
        for pid, part in frame.groupby("prompt", sort=False):
            fitted = BradleyTerry(n_iter=100).fit_predict(part.drop(columns="prompt"))
            for (_, cand), value in fitted.items():
                scores[pid][cand] = float(value)
    return {pid: groups_from_scores(s) for pid, s in scores.items()}


def loo_bradley_terry(judgments: list[dict]):
    """Ablation: Bradley-Terry with its prior chosen on leave-one-out votes, every vote
    weighted 1 (the joint model's strengths without its annotator model)."""
    from curation import crowd_bt as CB

    indexed = CB.index_comparisons(_pair_rows(judgments))
    c = indexed.comparisons
    _, theta, _, _ = CB.best_alpha(
        c, np.ones(len(c)), CB.FINAL_ALPHAS, np.zeros((c.n_prompts, c.n_candidates))
    )
    return {
        pid: groups_from_scores({cand: float(theta[p, i]) for i, cand in enumerate(cands)})
        for p, (pid, cands) in enumerate(zip(indexed.prompts, indexed.candidates, strict=True))
    }


def exported(
    project_id: int, **options
) -> tuple[dict[str, list[list[str]]], list[tuple[str, str]], float]:
    """Builds an export through the service and reads its Parquet files back."""
    import pyarrow.parquet as pq

    from annotate.models import Project
    from curation.services import export_build, export_create

    project = Project.objects.get(pk=project_id)
    export = export_create(
        project=project, options={"include_media": False, **options}, enqueue=False
    )
    started = time.perf_counter()
    export = export_build(export_id=export.pk)
    seconds = time.perf_counter() - started
    assert export.status == "done", export.error
    table = pq.read_table(export.path / "parquet" / "rankings.parquet").to_pylist()
    rankings = {}
    for row in table:
        by_rank: dict[int, list[str]] = defaultdict(list)
        for cid, rank in zip(row["candidate_ids"], row["rankings"], strict=True):
            by_rank[rank].append(cid)
        rankings[row["prompt_id"]] = [by_rank[r] for r in sorted(by_rank)]
    pairs = [
        (row["chosen_id"], row["rejected_id"])
        for row in pq.read_table(
            export.path / "parquet" / "pairs.parquet", columns=["chosen_id", "rejected_id"]
        ).to_pylist()
    ]
    return rankings, pairs, seconds


BASELINES = ("majority vote", "plain Bradley-Terry", "export, no denoise", "denoised export")
# Pairwise worlds only: crowd-kit's aggregators and the ablation of the joint model.
REFERENCES = ("crowd-kit Bradley-Terry", "crowd-kit NoisyBT", "BT, prior chosen on held-out votes")
# Exported pairs exist for these (plain Bradley-Terry and the reward model alone make none).
PAIR_SOURCES = ("majority vote", "export, no denoise", "denoised export")
# Row = (pairwise accuracy, tau-b, share ordered, accuracy of exported pairs, exported pairs).
Row = tuple[float, float, float, float, int]


def rm_alone(flip: float) -> str:
    return f"reward model alone, {flip:.0%} flipped"


def with_rm(flip: float) -> str:
    return f"denoised export + RM {flip:.0%}"


WITH_PRIOR = "denoised export + model prior"
# Rows of the consensus table: (clear-consensus pairs ordered against, clear-consensus pairs,
# of those overruled, how many the humans had right, the datasheet's share of strong pairs the
# prior contradicted before the constraint, 0). Counts, so that means over seeds add up.
OVERRULE_OF = {"denoised export": "overrule: export", WITH_PRIOR: "overrule: export + prior"}


def method_names(
    rm_flips: tuple[float, ...], references: bool = True, prior: bool = False
) -> list[str]:
    names = list(BASELINES) + (list(REFERENCES) if references else [])
    if prior:
        names.append(WITH_PRIOR)
    for f in rm_flips:
        names += [rm_alone(f), with_rm(f)]
    return names


def clear_consensus(judgments: list[dict]) -> dict[str, dict[tuple[str, str], bool]]:
    """Per prompt, pairs judged by two or more annotators, all the same way (pairwise worlds):
    ``(winner, loser) -> True``."""
    said: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for j in judgments:
        a, b = j["pair"]
        winner, loser = (a, b) if j["outcome"] == "a" else (b, a)
        said[(j["prompt"], winner, loser)].add(j["annotator"])
    out: dict[str, dict[tuple[str, str], bool]] = defaultdict(dict)
    for (pid, winner, loser), who in said.items():
        if len(who) >= 2 and not said.get((pid, loser, winner)):
            out[pid][(winner, loser)] = True
    return out


def overrules(
    world: World, rankings: dict[str, list[list[str]]], clear: dict, datasheet: dict
) -> Row:
    """How often an export orders a clear human consensus against it (a tie counts)."""
    total = against = right = 0
    for pid, pairs in clear.items():
        position = {c: g for g, group in enumerate(rankings.get(pid, [])) for c in group}
        for winner, loser in pairs:
            if winner not in position or loser not in position:
                continue
            total += 1
            if position[winner] >= position[loser]:
                against += 1
                right += world.quality[winner] > world.quality[loser]
    prior = datasheet["method"].get("model_prior") or {}
    return (
        float(against),
        float(total),
        float(right),
        float(prior.get("strong_pair_contradiction_rate", math.nan)),
        0,
    )


def last_datasheet(project_id: int) -> dict:
    from curation.models import DatasetExport

    return DatasetExport.objects.filter(project_id=project_id).order_by("-version")[0].datasheet


def run(
    workload: str,
    kind: str,
    n_prompts: int,
    seed: int,
    rm_flips: tuple[float, ...],
    *,
    prior: bool = False,
    references: bool = True,
    model_share: float = MODEL_SHARE,
) -> dict[float, dict[str, Row]]:
    results: dict[float, dict[str, Row]] = {}
    for p in NOISE_LEVELS:
        world, judgments, rm_noise = simulate(workload, n_prompts, p, kind, seed, model_share)
        project_id = load(world, judgments, f"{workload}-{kind}-{p}-s{seed}")
        votes = raw_votes(world, judgments)
        judged: dict[str, set[str]] = defaultdict(set)
        for j in judgments:
            judged[j["prompt"]].update(j.get("pair") or j.get("ranking"))
        maj_rankings, maj_pairs = majority(world, votes)
        row: dict[str, Row] = {
            "majority vote": (
                *recovery(world, maj_rankings, judged),
                pair_accuracy(world, maj_pairs),
                len(maj_pairs),
            ),
            "plain Bradley-Terry": (
                *recovery(world, plain_bradley_terry(world, votes), judged),
                math.nan,
                0,
            ),
        }
        if world.name != "rank4" and references:
            for name, rankings in (
                ("crowd-kit Bradley-Terry", crowdkit_rankings(world, judgments, noisy=False)),
                ("crowd-kit NoisyBT", crowdkit_rankings(world, judgments, noisy=True)),
                ("BT, prior chosen on held-out votes", loo_bradley_terry(judgments)),
            ):
                row[name] = (*recovery(world, rankings, judged), math.nan, 0)
        exports = [("export, no denoise", {"denoise": False}), ("denoised export", {})]
        if prior:
            exports.append((WITH_PRIOR, {"model_prior": True}))
        clear = clear_consensus(judgments) if prior and world.name != "rank4" else None
        for name, options in exports:
            rankings, pairs, _ = exported(project_id, **options)
            row[name] = (
                *recovery(world, rankings, judged),
                pair_accuracy(world, pairs),
                len(pairs),
            )
            if clear is not None and name in OVERRULE_OF:
                row[OVERRULE_OF[name]] = overrules(
                    world, rankings, clear, last_datasheet(project_id)
                )
        for f in rm_flips:
            scores = reward_model_scores(world, rm_noise, f)
            alone = {
                pid: groups_from_scores({c: scores[c] for c in cands})
                for pid, cands in world.prompts.items()
            }
            row[rm_alone(f)] = (*recovery(world, alone, judged), math.nan, 0)
            activate_reward_model(project_id, scores, f"{f:.2f}")
            rankings, pairs, _ = exported(project_id, rm_evaluator=True)
            row[with_rm(f)] = (
                *recovery(world, rankings, judged),
                pair_accuracy(world, pairs),
                len(pairs),
            )
        results[p] = row
        print(f"  {workload}/{kind} seed {seed} {p:.0%} done", file=sys.stderr, flush=True)
    return results


def mean_over_seeds(per_seed: list[dict[float, dict[str, Row]]]) -> dict[float, dict[str, Row]]:
    first = per_seed[0]
    return {
        p: {
            name: tuple(float(np.mean([r[p][name][k] for r in per_seed])) for k in range(5))  # type: ignore[misc]
            for name in first[p]
        }
        for p in first
    }


def report(
    title: str, per_seed: list[dict[float, dict[str, Row]]], rm_flips: tuple[float, ...]
) -> list[str]:
    results = mean_over_seeds(per_seed)
    levels = list(results)
    header = " | ".join(f"{p:.0%}" for p in levels)
    lines = [
        f"\n### {title}: pairwise accuracy / Kendall tau-b / share of pairs ordered"
        f" (mean of {len(per_seed)} seed(s); columns: human noise)\n",
        f"| method | {header} |",
        "|---|" + "---|" * len(levels),
    ]
    has_prior = WITH_PRIOR in results[levels[0]]
    for name in method_names(
        rm_flips, references=REFERENCES[0] in results[levels[0]], prior=has_prior
    ):
        cells = " | ".join(
            f"{results[p][name][0]:.3f} / {results[p][name][1]:.3f} / {results[p][name][2]:.2f}"
            for p in levels
        )
        lines.append(f"| {name} | {cells} |")
    lines += [f"\n{title}: accuracy of the exported pairs (number of pairs)\n"]
    lines += [f"| pairs from | {header} |", "|---|" + "---|" * len(levels)]
    for name in [*PAIR_SOURCES, *([WITH_PRIOR] if has_prior else []), *map(with_rm, rm_flips)]:
        cells = " | ".join(f"{results[p][name][3]:.3f} ({results[p][name][4]:.0f})" for p in levels)
        lines.append(f"| {name} | {cells} |")
    if OVERRULE_OF[WITH_PRIOR] in results[levels[0]]:
        lines += [
            f"\n{title}: clear human consensus (2+ annotators, all one way) ordered against it:"
            " pairs overruled / clear pairs ranked (share of the overruled where the humans were"
            " right); prior: share of strong pairs (2+ reliable annotators) it contradicted"
            " before the constraint\n",
            f"| export | {header} |",
            "|---|" + "---|" * len(levels),
        ]
        for name, key in OVERRULE_OF.items():
            cells = []
            for p in levels:
                against, total, right, contradicted, _ = results[p][key]
                share = f"{right / against:.0%} right" if against else "none"
                cell = f"{against:.1f} / {total:.0f} ({share})"
                if name == WITH_PRIOR:
                    cell += f"; prior: {contradicted:.1%}"
                cells.append(cell)
            lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines + [""] + verdicts(per_seed, rm_flips)


def verdicts(per_seed: list[dict[float, dict[str, Row]]], rm_flips: tuple[float, ...]) -> list[str]:
    """Issue 10's bars, checked on pairwise accuracy for every seed separately."""

    def failures(better: str, worse: str, levels: list[float]) -> list[str]:
        return [
            f"seed {k} at {p:.0%}: {r[p][better][0]:.3f} vs {r[p][worse][0]:.3f}"
            for k, r in enumerate(per_seed)
            for p in levels
            if not r[p][better][0] > r[p][worse][0]
        ]

    noisy = [p for p in per_seed[0] if p >= 0.1]
    everywhere = list(per_seed[0])
    out = []
    if WITH_PRIOR in per_seed[0][everywhere[0]]:
        gains = [
            f"{p:.0%}: {np.mean([r[p][WITH_PRIOR][0] - r[p]['denoised export'][0] for r in per_seed]):+.3f}"
            for p in everywhere
        ]
        out.append("model prior, accuracy gain over the export without it: " + ", ".join(gains))
    baselines = ["majority vote", "plain Bradley-Terry"]
    baselines += [r for r in REFERENCES[:2] if r in per_seed[0][noisy[0]]]
    for baseline in baselines:
        lost = failures("denoised export", baseline, noisy)
        out.append(
            f"denoised export beats {baseline} at every noise level 10-40 %, every seed: "
            + ("YES" if not lost else f"NO ({'; '.join(lost)})")
        )
    for f in rm_flips:
        lost = [
            f"seed {k} at {p:.0%}: {r[p][with_rm(f)][0]:.3f} vs {r[p]['denoised export'][0]:.3f}"
            for k, r in enumerate(per_seed)
            for p in everywhere
            if r[p][with_rm(f)][0] < r[p]["denoised export"][0]
        ]
        out.append(
            f"export + RM {f:.0%} never below the export without it: "
            + ("YES" if not lost else f"NO ({'; '.join(lost)})")
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; tables show the mean")
    parser.add_argument(
        "--quick", action="store_true", help="100 prompts, one seed, sparse world, mixed crowd"
    )
    parser.add_argument("--workloads", default="sparse", help="any of sparse,models,demo,rank4")
    parser.add_argument("--prior", action="store_true", help="add the model-prior export")
    parser.add_argument(
        "--model-share",
        type=float,
        default=MODEL_SHARE,
        help="models world: share of quality variance that is the model's",
    )
    parser.add_argument(
        "--no-references", action="store_true", help="skip crowd-kit and the BT ablation"
    )
    parser.add_argument("--crowds", default="mixed", help="mixed and/or uniform")
    parser.add_argument(
        "--rm-flips",
        default=",".join(str(f) for f in RM_FLIPS),
        help="simulated reward models: share of candidate pairs each flips",
    )
    args = parser.parse_args()
    n = 100 if args.quick else args.prompts
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    workloads = ["sparse"] if args.quick else args.workloads.split(",")
    crowds = ["mixed"] if args.quick else args.crowds.split(",")
    rm_flips = tuple(float(f) for f in args.rm_flips.split(",") if f and f != "none")

    from bench_curation_scale import _pg_admin, _setup_django

    url = os.environ.get("DATABASE_URL", "")
    tmp = Path(tempfile.mkdtemp(prefix="quorum-bench-recovery-"))
    # PostgreSQL: a scratch database of its own, dropped at the end; SQLite: one under tmp.
    scratch = f"quorum_bench_recovery_{os.getpid()}" if url.startswith("postgres") else None
    if scratch:
        _pg_admin(url, f'CREATE DATABASE "{scratch}"')
    _setup_django(tmp, scratch)
    started = time.perf_counter()
    try:
        out = [
            f"prompts per world: {n}; seeds {seeds}; human noise levels {list(NOISE_LEVELS)};"
            f" reward models flipping {list(rm_flips)} of pairs"
        ]
        for workload in workloads:
            for kind in crowds:
                per_seed = [
                    run(
                        workload,
                        kind,
                        n,
                        seed,
                        rm_flips,
                        prior=args.prior,
                        references=not args.no_references,
                        model_share=args.model_share,
                    )
                    for seed in seeds
                ]
                out += report(f"{workload}, {kind} crowd", per_seed, rm_flips)
                print("\n".join(out[-40:]), file=sys.stderr, flush=True)
        out.append(f"\nwall time {time.perf_counter() - started:.0f} s")
        print("\n".join(out))
    finally:
        if scratch:
            from django.db import connections

            connections.close_all()
            _pg_admin(url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
