"""A synthetic, deterministic demo world: projects, media, models, annotators and their votes.

Pure generator (no Django import). ``generate_world(seed, scale)`` builds everything in memory;
``write_world`` lays it out as Quorum JSONL files with a ``media/`` folder beside them plus a
``ground_truth.json``; the ``make_demo`` command then loads the JSONL through the real import
service, so the demo exercises the same path as a user's upload.

The world has hidden truth that tests, benchmarks and the demo reward model are measured against:

- **models** with a skill in [0, 1]. Every candidate is one model's attempt; its visible content
  (a correct explained answer, a terse one, a wrong count, a vague dodge; an image with the right
  or wrong colour/shape/count; a video moving the right or wrong way) follows the skill plus
  per-candidate noise, and its hidden **quality** score follows the content.
- **annotators** of four kinds: reliable (Thurstone, small noise), noisy (Plackett-Luce with a
  large temperature), position-biased (the first-presented slot looks better) and a spammer
  (uniformly random, too fast). Their judgments carry a presented order and a duration
  (``presented_order`` in the JSONL lists candidate ids as shown; pairs are also written in
  shown order, so outcome ``a`` is the first-shown candidate).

Ground truth lives only in ``ground_truth.json`` (read it with :func:`load_ground_truth`); it is
never written into the JSONL, so it never reaches a database row the UI shows, nor media.

Scales:

- ``small``: three media projects (VQA ranking over images and short videos, text-to-image
  ranking, text-to-video pairwise), ~40-60 prompts each, real PNG and H.264 MP4 files.
- ``mr2bench``: one text-only pairwise project the size of MR2Bench-Video: 4,700 prompts x 19
  models, ~20 judgments per prompt over 19 distinct pairs (~94,000 judgments).

Every prompt draws from its own RNG seeded by ``(seed, project, prompt index)``, so a world
generated with fewer prompts is a prefix of the full one.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

SCALES = ("small", "mr2bench")
GROUND_TRUTH_FORMAT = "quorum-demo-ground-truth/1"
GROUND_TRUTH_FILE = "ground_truth.json"
# Marks a folder as written by write_world, so a rerun may clear it (and nothing else).
MARKER_FILE = ".quorum-demo"
DEMO_SOURCE = "demo-simulation"

PROJECT_VQA = "Demo: VQA ranking"
PROJECT_T2I = "Demo: text-to-image ranking"
PROJECT_T2V = "Demo: text-to-video pairwise"
PROJECT_MR2 = "Demo: MR2Bench-scale"

SMALL_PROMPTS = {PROJECT_VQA: 60, PROJECT_T2I: 48, PROJECT_T2V: 40}
MR2_PROMPTS = 4700
MR2_MODELS = 19

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (34, 150, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 195, 20),
    "purple": (135, 55, 180),
    "orange": (245, 125, 15),
}
SHAPES = ("circle", "square", "triangle", "diamond")
DIRECTIONS = ("left", "right", "up", "down")
WORDS = ("CAT", "SUN", "MAP", "BOX", "KEY", "CUP", "PEN", "OWL", "FOX", "HAT")
BACKGROUND = (246, 245, 240)
OUTLINE = (40, 40, 40)

MODEL_NAMES = (
    "atlas",
    "borealis",
    "cirrus",
    "delta",
    "ember",
    "fjord",
    "gale",
    "halo",
    "iris",
    "juniper",
    "kestrel",
    "lumen",
    "meridian",
    "nimbus",
    "onyx",
    "prism",
    "quartz",
    "rune",
    "sable",
)

# Text answers: a latent z = skill + noise picks the visible category (first threshold that
# z reaches); the category sets most of the hidden quality, so what an annotator can see
# and the truth agree.
TEXT_CATEGORIES: tuple[tuple[str, float, float], ...] = (
    ("correct_explained", 0.72, 1.0),
    ("correct_terse", 0.55, 0.75),
    ("hedged", 0.42, 0.55),
    ("wrong", 0.20, 0.2),
    ("vague", -math.inf, 0.06),
)
TEXT_NOISE = 0.18
# Generated media: each attribute is right when skill + noise clears its difficulty.
ATTRIBUTE_NOISE = 0.2
T2I_DIFFICULTY = {"count": 0.55, "colour": 0.3, "shape": 0.4}
T2I_WEIGHTS = {"count": 0.4, "colour": 0.25, "shape": 0.25, "clean": 0.1}
T2V_DIFFICULTY = {"direction": 0.5, "colour": 0.3, "shape": 0.4}
T2V_WEIGHTS = {"direction": 0.4, "colour": 0.2, "shape": 0.2, "clean": 0.2}

# Share of tasks judged by k simulated annotators, by fewer, or left open for real people.
FULL_COVERAGE = 0.6
PARTIAL_COVERAGE = 0.15


# --- the cast -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelProfile:
    """A synthetic generator model; ``skill`` in [0, 1] is hidden ground truth."""

    name: str
    skill: float


@dataclass(frozen=True)
class AnnotatorProfile:
    """A simulated annotator (hidden ground truth; only ``username`` reaches the database).

    Attributes:
        username: ``ann_<kind>_<n>``; imported as the judgment's external annotator.
        kind: ``reliable`` | ``noisy`` | ``position_biased`` | ``spammer``.
        noise: std of Gaussian noise on perceived quality (Thurstone), or for ``noisy`` the
            scale of Gumbel noise (a Plackett-Luce model with that temperature).
        position_bias: added to the perceived quality of the first-presented slot, falling
            linearly to 0 at the last slot.
        tie_margin: perceived qualities closer than this are declared a tie.
        median_ms: median time for one pairwise judgment; rankings and videos take longer.
        weight: how often this annotator is drawn for a task, relative to the others.
    """

    username: str
    kind: str
    noise: float
    position_bias: float
    tie_margin: float
    median_ms: int
    weight: float


_ANNOTATOR_KINDS: dict[str, dict[str, float]] = {
    "reliable": {
        "noise": 0.05,
        "position_bias": 0.0,
        "tie_margin": 0.03,
        "median_ms": 14000,
        "weight": 3,
    },
    "noisy": {
        "noise": 0.3,
        "position_bias": 0.0,
        "tie_margin": 0.02,
        "median_ms": 9000,
        "weight": 2,
    },
    "position_biased": {
        "noise": 0.1,
        "position_bias": 0.35,
        "tie_margin": 0.02,
        "median_ms": 7000,
        "weight": 2,
    },
    "spammer": {
        "noise": 0.0,
        "position_bias": 0.0,
        "tie_margin": 0.0,
        "median_ms": 1200,
        "weight": 1,
    },
}
SMALL_POOL = {"reliable": 2, "noisy": 2, "position_biased": 1, "spammer": 1}
# In the small world the one position-biased annotator judges about a third of the tasks, so
# each project holds enough of their judgments (30+) for the position-bias test to see them.
SMALL_WEIGHTS = {"position_biased": 8.0}
MR2_POOL = {"reliable": 12, "noisy": 8, "position_biased": 6, "spammer": 4}


def make_annotators(
    mix: dict[str, int], weights: dict[str, float] | None = None
) -> list[AnnotatorProfile]:
    """Annotator profiles named ``ann_<kind>_<n>`` (``ann_biased_n`` for position-biased);
    ``weights`` overrides how often each kind is drawn for a task."""
    people = []
    for kind, count in mix.items():
        label = "biased" if kind == "position_biased" else kind
        params = _ANNOTATOR_KINDS[kind]
        for i in range(1, count + 1):
            people.append(
                AnnotatorProfile(
                    username=f"ann_{label}_{i}",
                    kind=kind,
                    noise=params["noise"],
                    position_bias=params["position_bias"],
                    tie_margin=params["tie_margin"],
                    median_ms=int(params["median_ms"]),
                    weight=(weights or {}).get(kind, params["weight"]),
                )
            )
    return people


def make_models(seed: int, count: int) -> list[ModelProfile]:
    """``count`` models with skills spread from strong (~0.92) to weak (~0.15).

    Names are assigned to skills by the seed, so no name is always the best.
    """
    rng = random.Random(f"{seed}/models/{count}")
    names = list(MODEL_NAMES[:count])
    rng.shuffle(names)
    top, bottom = 0.92, 0.15
    step = (top - bottom) / max(count - 1, 1)
    return [
        ModelProfile(name, round(_clamp01(top - i * step + rng.gauss(0, 0.015)), 4))
        for i, name in enumerate(names)
    ]


# --- the world ------------------------------------------------------------------------------


@dataclass
class DemoProject:
    """One demo project: its settings, JSONL rows, media files and hidden truth.

    Attributes:
        name: the project name in Quorum.
        slug: file stem of its JSONL.
        settings: the JSONL's first-line project settings.
        rows: one dict per prompt, in Quorum JSONL shape (see ``annotate.importing``).
        media: file bytes by path relative to the JSONL (``media/...``).
        truth: ``{"mode", "prompts": {id: {...}}, "candidates": {id: {...}}}``.
    """

    name: str
    slug: str
    settings: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, bytes] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.slug}.jsonl"

    def jsonl_bytes(self) -> bytes:
        """The Quorum JSONL file: project settings, then one prompt per line."""
        lines = [json.dumps({"project": self.settings}, ensure_ascii=False)]
        lines += [json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in self.rows]
        return ("\n".join(lines) + "\n").encode()

    @property
    def judgment_count(self) -> int:
        return sum(len(row.get("judgments", ())) for row in self.rows)

    @property
    def candidate_count(self) -> int:
        return sum(len(row["candidates"]) for row in self.rows)


@dataclass
class DemoWorld:
    seed: int
    scale: str
    models: list[ModelProfile]
    annotators: list[AnnotatorProfile]
    projects: list[DemoProject]

    def ground_truth(self) -> dict[str, Any]:
        """Everything hidden, as the JSON object written to ``ground_truth.json``."""
        return {
            "format": GROUND_TRUTH_FORMAT,
            "seed": self.seed,
            "scale": self.scale,
            "models": {m.name: {"skill": m.skill} for m in self.models},
            "annotators": {
                a.username: {k: v for k, v in asdict(a).items() if k != "username"}
                for a in self.annotators
            },
            "projects": {
                p.name: {"file": p.filename, **p.truth, "annotators": _annotator_accuracy(p)}
                for p in self.projects
            },
        }


def generate_world(seed: int = 0, scale: str = "small", *, prompts: int | None = None) -> DemoWorld:
    """Builds the whole demo world in memory; the same arguments give identical bytes.

    Args:
        seed: world seed; it is part of every prompt id, so worlds of different seeds can
            share a database without colliding.
        scale: ``"small"`` (three media projects) or ``"mr2bench"`` (one large text project).
        prompts: overrides the prompt count (per project for ``small``), for quick runs and
            tests; a smaller world is a prefix of the full one.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r} (expected one of {', '.join(SCALES)})")
    if prompts is not None and prompts < 1:
        raise ValueError("prompts must be at least 1")
    if scale == "mr2bench":
        models = make_models(seed, MR2_MODELS)
        annotators = make_annotators(MR2_POOL)
        projects = [_mr2bench_project(seed, models, annotators, prompts or MR2_PROMPTS)]
    else:
        models = make_models(seed, 8)
        annotators = make_annotators(SMALL_POOL, SMALL_WEIGHTS)
        projects = [
            _vqa_project(seed, models, annotators, prompts or SMALL_PROMPTS[PROJECT_VQA]),
            _t2i_project(seed, models, annotators, prompts or SMALL_PROMPTS[PROJECT_T2I]),
            _t2v_project(seed, models, annotators, prompts or SMALL_PROMPTS[PROJECT_T2V]),
        ]
    return DemoWorld(seed, scale, models, annotators, projects)


def write_world(world: DemoWorld, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Writes each project's JSONL, the media beside them and ``ground_truth.json``.

    A folder written before (it holds the marker file) is cleared first, so media of another
    seed does not pile up; a non-empty folder without the marker is refused.

    Returns:
        The JSONL path of each project, by project name.

    Raises:
        FileExistsError: ``out_dir`` is a non-empty folder not written by this function.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / MARKER_FILE).exists():
        raise FileExistsError(
            f"{out} is not empty and was not written by make_demo; choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).write_text("Written by annotate.demo_world; cleared on each run.\n")
    shutil.rmtree(out / "media", ignore_errors=True)
    for old in out.glob("*.jsonl"):
        old.unlink()
    paths = {}
    for project in world.projects:
        for rel, data in project.media.items():
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        path = out / project.filename
        path.write_bytes(project.jsonl_bytes())
        paths[project.name] = path
    (out / GROUND_TRUTH_FILE).write_text(
        json.dumps(world.ground_truth(), indent=1, sort_keys=True) + "\n"
    )
    return paths


# --- ground truth -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectTruth:
    """Hidden truth of one project: per prompt (e.g. the true answer) and per candidate."""

    mode: str
    file: str
    prompts: dict[str, dict[str, Any]]
    candidates: dict[str, dict[str, Any]]
    annotator_accuracy: dict[str, float]

    def quality(self) -> dict[str, float]:
        """Hidden quality of every candidate, by candidate external id."""
        return {cid: c["quality"] for cid, c in self.candidates.items()}

    @cached_property
    def candidates_by_prompt(self) -> dict[str, list[str]]:
        """Candidate ids of each prompt, in file order."""
        index: dict[str, list[str]] = {}
        for cid, c in self.candidates.items():
            index.setdefault(c["prompt"], []).append(cid)
        return index

    def gold_prompts(self) -> list[str]:
        """Ids of the prompts whose tasks are gold (their true ranking is the answer)."""
        return [pid for pid, p in self.prompts.items() if p.get("gold")]

    def true_groups(self, candidate_ids: Sequence[str]) -> list[list[str]]:
        """``candidate_ids`` as tie groups by hidden quality, best first."""
        ranked = sorted(candidate_ids, key=lambda cid: (-self.candidates[cid]["quality"], cid))
        groups: list[list[str]] = []
        for cid in ranked:
            if (
                groups
                and self.candidates[groups[-1][0]]["quality"] == self.candidates[cid]["quality"]
            ):
                groups[-1].append(cid)
            else:
                groups.append([cid])
        return groups

    def true_ranking(self, prompt_id: str) -> list[str]:
        """The prompt's candidate ids, best first (ties in quality kept in id order)."""
        ids = self.candidates_by_prompt.get(prompt_id, [])
        return sorted(ids, key=lambda cid: (-self.candidates[cid]["quality"], cid))


@dataclass(frozen=True)
class GroundTruth:
    """The parsed ``ground_truth.json``.

    Attributes:
        models: skill by model name.
        annotators: profile by username.
        projects: truth by project name; candidates keyed by external id.
    """

    seed: int
    scale: str
    models: dict[str, float]
    annotators: dict[str, AnnotatorProfile]
    projects: dict[str, ProjectTruth]


def load_ground_truth(path: str | os.PathLike[str]) -> GroundTruth:
    """Reads a demo folder's ``ground_truth.json`` (or the folder itself).

    Raises:
        ValueError: the file is not a demo ground-truth file of a known format version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / GROUND_TRUTH_FILE
    raw = json.loads(path.read_text())
    if raw.get("format") != GROUND_TRUTH_FORMAT:
        raise ValueError(f"{path}: not a {GROUND_TRUTH_FORMAT} file (format {raw.get('format')!r})")
    return GroundTruth(
        seed=raw["seed"],
        scale=raw["scale"],
        models={name: m["skill"] for name, m in raw["models"].items()},
        annotators={
            name: AnnotatorProfile(username=name, **profile)
            for name, profile in raw["annotators"].items()
        },
        projects={
            name: ProjectTruth(
                mode=p["mode"],
                file=p["file"],
                prompts=p["prompts"],
                candidates=p["candidates"],
                annotator_accuracy=p["annotators"],
            )
            for name, p in raw["projects"].items()
        },
    )


def _annotator_accuracy(project: DemoProject) -> dict[str, float]:
    """Per annotator, the share of strict preferences they stated that agree with the truth.

    Counts every ordered pair a judgment implies (pairs of different tie groups, a/b pair
    outcomes) whose candidates differ in true quality; ties and both_bad state no preference.
    """
    quality = {cid: c["quality"] for cid, c in project.truth["candidates"].items()}
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    for row in project.rows:
        for j in row.get("judgments", ()):
            if "ranking" in j:
                groups = j["ranking"]
                prefs = [
                    (w, lo)
                    for i, g in enumerate(groups)
                    for h in groups[i + 1 :]
                    for w in g
                    for lo in h
                ]
            elif j["outcome"] in ("a", "b"):
                a, b = j["pair"]
                prefs = [(a, b)] if j["outcome"] == "a" else [(b, a)]
            else:
                prefs = []
            who = j["annotator"]
            for winner, loser in prefs:
                if quality[winner] == quality[loser]:
                    continue
                total[who] = total.get(who, 0) + 1
                right[who] = right.get(who, 0) + (quality[winner] > quality[loser])
    return {who: round(right[who] / total[who], 4) for who in sorted(total)}


# --- simulated judging ------------------------------------------------------------------------


def _perceive(
    annotator: AnnotatorProfile, qualities: Sequence[float], rng: random.Random
) -> list[float]:
    """Perceived quality of each candidate, in presented order."""
    n = len(qualities)
    if annotator.kind == "spammer":
        return [rng.random() for _ in qualities]
    if annotator.kind == "noisy":
        # Gumbel-perturbed utilities: the argsort is a Plackett-Luce sample with
        # temperature ``noise`` over exp(quality / noise).
        values = [q - annotator.noise * math.log(-math.log(_open01(rng))) for q in qualities]
    else:
        values = [q + rng.gauss(0.0, annotator.noise) for q in qualities]
    if annotator.position_bias and n > 1:
        values = [v + annotator.position_bias * (n - 1 - i) / (n - 1) for i, v in enumerate(values)]
    return values


def simulate_ranking(
    annotator: AnnotatorProfile,
    presented: Sequence[str],
    quality: dict[str, float],
    rng: random.Random,
) -> list[list[str]]:
    """The annotator's ranking of ``presented`` (ids in shown order) as tie groups, best first."""
    values = _perceive(annotator, [quality[c] for c in presented], rng)
    # Sort by perceived value; equal values keep the shown order (a stable, honest default).
    order = sorted(range(len(presented)), key=lambda i: -values[i])
    groups: list[list[str]] = [[presented[order[0]]]]
    for prev, cur in zip(order, order[1:], strict=False):
        if values[prev] - values[cur] < annotator.tie_margin:
            groups[-1].append(presented[cur])
        else:
            groups.append([presented[cur]])
    return groups


def simulate_pair(
    annotator: AnnotatorProfile,
    presented: Sequence[str],
    quality: dict[str, float],
    rng: random.Random,
) -> str:
    """Outcome for a pair in shown order: ``a`` (first shown won), ``b``, ``tie``, ``both_bad``."""
    first, second = _perceive(annotator, [quality[c] for c in presented], rng)
    if annotator.kind == "spammer":
        return "a" if first > second else "b"
    # Careful people call out two bad candidates instead of picking the lesser evil.
    if max(first, second) < 0.25 and annotator.kind == "reliable":
        return "both_bad"
    if abs(first - second) < annotator.tie_margin:
        return "tie"
    return "a" if first > second else "b"


def simulate_duration(
    annotator: AnnotatorProfile, rng: random.Random, *, slots: int, video: bool = False
) -> int:
    """Milliseconds spent: log-normal around the annotator's pace, longer for more slots."""
    factor = 1.0 + 0.6 * (slots - 2) + (0.5 if video else 0.0)
    return max(300, int(annotator.median_ms * factor * math.exp(rng.gauss(0.0, 0.35))))


def _pick_annotators(
    annotators: Sequence[AnnotatorProfile], k: int, rng: random.Random
) -> list[AnnotatorProfile]:
    """k distinct annotators, drawn by weight without replacement."""
    pool = list(annotators)
    chosen = []
    for _ in range(min(k, len(pool))):
        total = sum(a.weight for a in pool)
        r = rng.random() * total
        for index, a in enumerate(pool):
            r -= a.weight
            if r < 0 or index == len(pool) - 1:
                chosen.append(pool.pop(index))
                break
    return chosen


def _coverage(rng: random.Random, k: int) -> int:
    """How many simulated judgments a task gets: k, fewer, or none (left for real people)."""
    r = rng.random()
    if r < FULL_COVERAGE:
        return k
    if r < FULL_COVERAGE + PARTIAL_COVERAGE:
        return rng.randint(1, k - 1) if k > 1 else 1
    return 0


def _judge_task(
    *,
    pid: str,
    task_ids: Sequence[str],
    quality: dict[str, float],
    annotators: Sequence[AnnotatorProfile],
    count: int,
    rng: random.Random,
    pairwise: bool,
    video: bool,
    key_suffix: str = "",
    gold_rng: random.Random | None = None,
) -> list[dict[str, Any]]:
    """``count`` judgments on one task by distinct annotators, each shown a fresh shuffle; on a
    gold task (``gold_rng`` given) every other annotator judges it too, drawing from
    ``gold_rng`` so that the first ``count`` judgments are those of a task that is not gold."""
    out = []
    panel = _pick_annotators(annotators, count, rng)
    judges = [(a, rng) for a in panel]
    if gold_rng is not None:
        rest = [a for a in annotators if a not in panel]
        judges += [(a, gold_rng) for a in _pick_annotators(rest, len(rest), gold_rng)]
    for annotator, stream in judges:
        presented = list(task_ids)
        stream.shuffle(presented)
        judgment: dict[str, Any] = {"annotator": annotator.username}
        if pairwise:
            judgment["pair"] = presented
            judgment["outcome"] = simulate_pair(annotator, presented, quality, stream)
        else:
            judgment["ranking"] = simulate_ranking(annotator, presented, quality, stream)
        judgment["presented_order"] = presented
        judgment["duration_ms"] = simulate_duration(
            annotator, stream, slots=len(presented), video=video
        )
        judgment["source"] = DEMO_SOURCE
        judgment["key"] = f"demo:{pid}{key_suffix}:{annotator.username}"
        out.append(judgment)
    return out


# The prompt of each ranking project whose judgments are made to form a cycle (labelled in its
# metadata), so every ranking project shows the cycle queue at work.
CYCLE_PROMPT = 2
CYCLE_CASE = (
    "planted cycle: three annotators rank the three best answers in rotation "
    "(A>B>C, B>C>A, C>A>B), so every pairwise majority points around a loop"
)


# Gold tasks: in each small project, the first GOLD_PER_PROJECT prompts from GOLD_FROM on whose
# candidates a careful person can order (true qualities at least GOLD_GAP apart, the best one
# good enough that nobody calls both of a pair bad). Quorum serves a gold task to every
# annotator once, so every simulated annotator judges them; the hidden true ranking is the gold
# answer (``make_demo`` stores it on the tasks), and whoever orders it wrongly -- the spammer
# above all -- lands in the failed-gold queue. Chosen from what was drawn before the judgments,
# so a smaller world is still a prefix of a larger one; the extra judges draw from a stream of
# their own, so every judgment the world had before stays as it was.
GOLD_PER_PROJECT = 4
GOLD_FROM = 3
GOLD_GAP = 0.12
GOLD_BEST = 0.4
# Projects' gold rate: people annotating the demo are served a gold task this often.
GOLD_RATE = 0.1


def _judge_ranking(
    row: dict[str, Any],
    index: int,
    quality: dict[str, float],
    gold: bool,
    seed: int,
    slug: str,
    annotators: Sequence[AnnotatorProfile],
    rng: random.Random,
    *,
    video: bool,
) -> None:
    """A ranking row's simulated judgments (``row["judgments"]``); prompt ``CYCLE_PROMPT``
    of each project gets three, with an intransitive cycle planted in them."""
    row["judgments"] = _judge_task(
        pid=row["id"],
        task_ids=list(quality),
        quality=quality,
        annotators=annotators,
        count=3 if index == CYCLE_PROMPT else _coverage(rng, 3),
        rng=rng,
        gold_rng=_rng(seed, f"{slug}/gold", index) if gold else None,
        pairwise=False,
        video=video,
    )
    if index == CYCLE_PROMPT:
        _plant_cycle(row["judgments"], quality)
        row["metadata"]["demo_case"] = CYCLE_CASE


def _is_gold(index: int, quality: dict[str, float], gold_so_far: int) -> bool:
    ordered = sorted(quality.values(), reverse=True)
    return (
        gold_so_far < GOLD_PER_PROJECT
        and index >= GOLD_FROM
        and index != CYCLE_PROMPT
        and ordered[0] >= GOLD_BEST
        and all(a - b >= GOLD_GAP for a, b in zip(ordered, ordered[1:], strict=False))
    )


def _plant_cycle(judgments: list[dict[str, Any]], quality: dict[str, float]) -> None:
    """Rewrites the first three rankings as rotations of the three best candidates."""
    if len(judgments) < 3:
        raise ValueError("a planted cycle needs three judgments")
    best = sorted(quality, key=lambda c: -quality[c])
    top, rest = best[:3], best[3:]
    for shift, judgment in enumerate(judgments[:3]):
        turned = top[shift:] + top[:shift]
        judgment["ranking"] = [[c] for c in turned + rest]


# --- text answers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A question with a checkable answer and ways to phrase right and wrong replies."""

    kind: str
    text: str
    answer: str
    wrong: tuple[str, ...]
    statement: Callable[[str], str]  # a confident full-sentence reply claiming a value
    explanation: str  # why the true answer is right
    vague: tuple[str, ...]


def _text_answer(question: Question, skill: float, rng: random.Random) -> tuple[str, str, float]:
    """One model's reply: (text, visible category, hidden quality)."""
    z = skill + rng.gauss(0.0, TEXT_NOISE)
    category, base = next((name, b) for name, threshold, b in TEXT_CATEGORIES if z >= threshold)
    if category == "correct_explained":
        text = f"{question.statement(question.answer)} {question.explanation}"
    elif category == "correct_terse":
        text = f"{question.answer[:1].upper()}{question.answer[1:]}."
    elif category == "hedged":
        text = rng.choice(
            (
                f"Maybe {question.answer}? I am not completely sure.",
                f"I think it is {question.answer}, but it is hard to tell.",
                f"Possibly {question.answer}.",
            )
        )
    elif category == "wrong":
        text = question.statement(rng.choice(question.wrong))
    else:
        text = rng.choice(question.vague)
    quality = _clamp01(0.85 * base + 0.15 * _clamp01(z))
    return text, category, round(quality, 4)


# Ways to say the same reply again: models often give word-for-word the same short answer, but
# a prompt whose candidates read identically cannot be ranked (and teaches a reward model
# nothing). A repeat is reworded without changing what it claims (its quality stays).
_REWORDINGS = tuple(
    prefix + "{text}"
    # Prefixes only: a reply ends as it did, where a reward model reads it out.
    for prefix in (
        "Answer: ",
        "In short: ",
        "My reply: ",
        "Here is what I see. ",
        "After looking carefully: ",
        "To answer the question: ",
        "Response: ",
        "Having checked again: ",
        "Short version: ",
        "Looking at it: ",
        "Reply: ",
        "Well, ",
        "Sure. ",
        "So: ",
        "Final answer: ",
        "From what is shown: ",
        "Let me answer. ",
        "Quick answer: ",
    )
)


def _distinct(text: str, used: set[str]) -> str:
    """``text``, reworded if another candidate of the prompt already says exactly that; draws
    nothing from the world's random streams, so the rest of the world is unchanged."""
    wordings = (text, *(wording.format(text=text) for wording in _REWORDINGS))
    out = next((w for w in wordings if w not in used), None)
    if out is None:
        n = 2
        while f"({n}) {text}" in used:
            n += 1
        out = f"({n}) {text}"
    used.add(out)
    return out


def _a(word: str) -> str:
    """The word with its indefinite article ("an orange", "a red")."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _count_question(colour: str, shape: str, count: int, where: str) -> Question:
    wrong = tuple(str(v) for v in (count - 2, count - 1, count + 1, count + 2) if v >= 0)
    return Question(
        kind="count",
        text=f"How many {colour} {shape}s are in the {where}?",
        answer=str(count),
        wrong=wrong,
        statement=lambda v: (
            f"There {'is' if v == '1' else 'are'} {_plural(int(v), f'{colour} {shape}')} "
            f"in the {where}."
        ),
        explanation=(
            f"I counted only shapes that are both {colour} and {shape}s; "
            "the other shapes differ in colour or form."
        ),
        vague=(
            f"The {where} shows several coloured shapes.",
            f"I cannot determine that from the {where}.",
            "There are a few shapes of different colours.",
        ),
    )


def _colour_question(shape: str, colour: str, others: Sequence[str], where: str) -> Question:
    return Question(
        kind="colour",
        text=f"What colour is the {shape} in the {where}?",
        answer=colour,
        wrong=tuple(others),
        statement=lambda v: f"The {shape} is {v}.",
        explanation=f"It is the only {shape} in the {where}, and it is filled with {colour}.",
        vague=(
            "It is a bright colour.",
            f"The {shape} has a colour similar to the other shapes.",
            "Hard to say; the colours are mixed.",
        ),
    )


def _exists_question(colour: str, shape: str, present: bool) -> Question:
    answer = "yes" if present else "no"
    return Question(
        kind="exists",
        text=f"Is there {_a(colour)} {shape} in the picture?",
        answer=answer,
        wrong=("no" if present else "yes",),
        statement=lambda v: (
            f"Yes, there is {_a(colour)} {shape} in the picture."
            if v == "yes"
            else f"No, there is no {colour} {shape} in the picture."
        ),
        explanation=(
            f"I checked every shape for both the colour {colour} and the {shape} form."
            if present
            else f"Some shapes are {colour} or are {shape}s, but none is both."
        ),
        vague=(
            "There are many shapes, some of them coloured.",
            "It could be either.",
            "The picture contains geometric shapes.",
        ),
    )


def _word_question(word: str, rng: random.Random) -> Question:
    others = [w for w in WORDS if w != word]
    misspelt = word[0] + word[2] + word[1]
    return Question(
        kind="word",
        text="What word is written on the sign?",
        answer=word,
        wrong=(rng.choice(others), misspelt),
        statement=lambda v: f'The sign says "{v}".',
        explanation=f"The capital letters {', '.join(word)} are printed on the white sign.",
        vague=("There is some text on a sign.", "The sign is too small to read.", "A short word."),
    )


def _direction_question(colour: str, shape: str, direction: str) -> Question:
    return Question(
        kind="direction",
        text=f"In which direction does the {colour} {shape} move in the video?",
        answer=direction,
        wrong=tuple(d for d in DIRECTIONS if d != direction),
        statement=lambda v: f"The {colour} {shape} moves {v}.",
        explanation=(
            f"Its position shifts steadily {direction} from the first frame to the last, "
            "while the other shapes stay still."
        ),
        vague=(
            "The shape moves around the frame.",
            "Several shapes are visible in the video.",
            "It moves a little.",
        ),
    )


def _arithmetic_question(rng: random.Random) -> Question:
    """A text-only question with a checkable answer (for the media-free MR2Bench scale)."""
    op = rng.choice(("+", "-", "x", "letters"))
    if op == "letters":
        word = rng.choice(
            ("strawberry", "excellence", "banana", "mississippi", "bookkeeper", "committee")
        )
        letter = rng.choice(sorted(set(word)))
        value = word.count(letter)
        wrong = tuple(str(v) for v in (value - 1, value + 1, value + 2) if v >= 0)
        return Question(
            kind="letters",
            text=f"How many times does the letter '{letter}' appear in '{word}'?",
            answer=str(value),
            wrong=wrong,
            statement=lambda v: f"The letter '{letter}' appears {v} times in '{word}'.",
            explanation=f"Spelling it out: {'-'.join(word)}.",
            vague=("It appears a few times.", "Letters repeat in that word.", "Quite often."),
        )
    a, b = rng.randint(12, 99), rng.randint(12, 99)
    if op == "x":
        a, b = rng.randint(3, 19), rng.randint(3, 12)
    if op == "-" and b > a:
        a, b = b, a
    value = {"+": a + b, "-": a - b, "x": a * b}[op]
    symbol = {"+": "+", "-": "-", "x": "\u00d7"}[op]
    word = {"+": "sum", "-": "difference", "x": "product"}[op]
    offsets = (-10, -2, -1, 1, 2, 10) if op != "x" else (-b, -1, 1, b)
    return Question(
        kind=f"arithmetic{op}",
        text=f"What is {a} {symbol} {b}?",
        answer=str(value),
        wrong=tuple(str(value + d) for d in offsets),
        statement=lambda v: f"{a} {symbol} {b} = {v}.",
        explanation=_explain_arithmetic(op, a, b, value),
        vague=(
            f"The {word} of two numbers; a calculator will give it.",
            f"It is a {word} of {a} and {b}.",
            "That depends on the method you use.",
        ),
    )


def _explain_arithmetic(op: str, a: int, b: int, value: int) -> str:
    if op == "+":
        return f"Tens: {a // 10 * 10} + {b // 10 * 10} = {a // 10 * 10 + b // 10 * 10}; ones: {a % 10} + {b % 10} = {a % 10 + b % 10}; together {value}."
    if op == "-":
        return f"Check: {value} + {b} = {a}."
    return f"{a} \u00d7 {b} is {b} groups of {a}: {value}."


# --- pictures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    shape: str
    colour: str
    cx: float
    cy: float
    r: float


def _draw_shape(draw: ImageDraw.ImageDraw, s: Shape, scale: int = 1) -> None:
    """Draws ``s`` (laid out in layout units) at ``scale`` pixels per unit."""
    fill = COLOURS[s.colour]
    cx, cy, r = s.cx * scale, s.cy * scale, s.r * scale
    if s.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=OUTLINE, width=scale)
    elif s.shape == "square":
        k = r * 0.85
        draw.rectangle((cx - k, cy - k, cx + k, cy + k), fill=fill, outline=OUTLINE, width=scale)
    elif s.shape == "triangle":
        draw.polygon(
            [(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)],
            fill=fill,
            outline=OUTLINE,
            width=scale,
        )
    else:
        draw.polygon(
            [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)],
            fill=fill,
            outline=OUTLINE,
            width=scale,
        )


def _layout(
    rng: random.Random,
    items: Sequence[tuple[str, str]],
    *,
    size: int,
    grid: int,
    rows: Sequence[int] | None = None,
) -> list[Shape]:
    """Places shapes in distinct grid cells (no overlaps, so counts are unambiguous)."""
    cell = size / grid
    allowed_rows = list(rows) if rows is not None else list(range(grid))
    cells = [(r, c) for r in allowed_rows for c in range(grid)]
    if len(items) > len(cells):
        raise ValueError(f"{len(items)} shapes do not fit {len(cells)} cells")
    chosen = rng.sample(cells, len(items))
    out = []
    for (shape, colour), (row, col) in zip(items, chosen, strict=True):
        r = cell * rng.uniform(0.3, 0.38)
        jitter = cell / 2 - r - 1
        out.append(
            Shape(
                shape,
                colour,
                (col + 0.5) * cell + rng.uniform(-jitter, jitter),
                (row + 0.5) * cell + rng.uniform(-jitter, jitter),
                r,
            )
        )
    return out


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (size, size), BACKGROUND)
    return img, ImageDraw.Draw(img)


def _render_shapes(shapes: Sequence[Shape], size: int, scale: int = 1) -> Image.Image:
    """A ``size * scale`` px picture of shapes laid out on a ``size`` unit canvas."""
    img, draw = _canvas(size * scale)
    for s in shapes:
        _draw_shape(draw, s, scale)
    return img


def _degrade(img: Image.Image, artefact: float, seed: int, scale: int = 1) -> Image.Image:
    """A weak generator's rendering: blur and stray specks, both growing with ``artefact``;
    ``scale`` is the picture's pixels per layout unit (blur and specks grow with it).

    Specks rather than per-pixel grain: they are as visible but keep the PNGs a few KB.
    """
    if artefact < 0.05:
        return img
    radius = 1.6 * artefact * scale
    # Only what differs from the plain background can blur; blurring that part alone (with a
    # margin of background around it) is the same picture at a fraction of the cost.
    box = ImageChops.difference(img, Image.new("RGB", img.size, BACKGROUND)).getbbox()
    if box is not None:
        pad = math.ceil(3 * radius) + 2
        box = (
            max(0, box[0] - pad),
            max(0, box[1] - pad),
            min(img.width, box[2] + pad),
            min(img.height, box[3] + pad),
        )
        img.paste(img.crop(box).filter(ImageFilter.GaussianBlur(radius=radius)), box[:2])
    rng = np.random.default_rng(seed)
    draw = ImageDraw.Draw(img)
    units = img.width // scale
    for _ in range(int(40 * artefact)):
        x, y = (int(v) * scale for v in rng.integers(0, units, 2))
        shade = tuple(int(v) for v in rng.integers(0, 256, 3))
        size = int(rng.integers(1, 3)) * scale
        draw.rectangle((x, y, x + size, y + size), fill=shade)
    return img


_FONT_CACHE: dict[int, ImageFont.ImageFont | ImageFont.FreeTypeFont] = {}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if size not in _FONT_CACHE:
        try:
            _FONT_CACHE[size] = ImageFont.load_default(size=size)
        except (OSError, ImportError):  # Pillow without FreeType: the bitmap font
            _FONT_CACHE[size] = ImageFont.load_default()
    return _FONT_CACHE[size]


_Y_ROW = np.array([65.481, 128.553, 24.966], dtype=np.float32)
_U_ROW = np.array([-37.797, -74.203, 112.0], dtype=np.float32)
_V_ROW = np.array([112.0, -93.786, -18.214], dtype=np.float32)


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 planes stacked as PyAV's ``yuv420p`` ndarray layout.

    Converting here (and stamping each frame's pts) made the MP4 bytes repeat exactly for a
    seed; handing RGB frames to ``encode()`` did not (PyAV 18). Height must be a multiple of 4.
    """
    rgb = frame.astype(np.float32)
    h, w = rgb.shape[:2]
    y = 16.0 + rgb @ (_Y_ROW / 255.0)
    # The conversion is linear, so averaging RGB over each 2x2 block before converting gives
    # the chroma of the averaged planes at a quarter of the work.
    rows = rgb[0::2] + rgb[1::2]
    quad = 0.25 * (rows[:, 0::2] + rows[:, 1::2])
    u = 128.0 + quad @ (_U_ROW / 255.0)
    v = 128.0 + quad @ (_V_ROW / 255.0)
    planes = np.concatenate([y, u.reshape(h // 4, w), v.reshape(h // 4, w)], axis=0)
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8)


def encode_mp4(frames: Sequence[np.ndarray], *, fps: int = 8) -> bytes:
    """RGB frames as an H.264 (Main, yuv420p) MP4 with its index first, so browsers start at once.

    Args:
        frames: uint8 RGB arrays of one shape; height a multiple of 4, width even.
        fps: frame rate.
    """
    import av  # only the media scales need FFmpeg

    height, width = frames[0].shape[:2]
    if height % 4 or width % 2:
        raise ValueError(f"frame size {width}x{height}: height must be a multiple of 4, width even")
    with tempfile.TemporaryDirectory(prefix="quorum-demo-") as tmp:
        # +faststart rewrites the file after encoding, which needs a real seekable path.
        path = os.path.join(tmp, "clip.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {
                "crf": "26",
                "preset": "veryfast",
                "profile": "main",
                # One thread: the demo machine has two cores and other work to do.
                "threads": "1",
                # The macroblock-tree lookahead made grainy clips encode differently from run
                # to run (asm=0 cured it too, at a higher cost); without it they repeat.
                "x264-params": "mbtree=0",
            }
            for index, frame in enumerate(frames):
                yuv = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
                # x264's rate control reads frame durations; frames without pts gave
                # different bytes from run to run.
                yuv.pts = index
                yuv.time_base = Fraction(1, fps)
                for packet in stream.encode(yuv):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        with open(path, "rb") as fh:
            return fh.read()


def _motion_frames(
    *,
    mover: Shape,
    direction: str,
    still: Sequence[Shape],
    size: int,
    frames: int,
    rng: random.Random,
    jitter: float = 0.0,
    artefact: float = 0.0,
    noise_seed: int = 0,
    scale: int = 1,
) -> list[np.ndarray]:
    """Frames of ``mover`` crossing the frame in ``direction`` past still shapes; positions
    and ``jitter`` in layout units of a ``size`` canvas, frames ``size * scale`` px."""
    margin = mover.r + 2
    start, end = margin, size - margin
    out = []
    for i in range(frames):
        t = i / (frames - 1)
        along = start + (end - start) * t
        if direction in ("left", "up"):
            along = end - (end - start) * t
        x, y = (along, mover.cy) if direction in ("left", "right") else (mover.cx, along)
        x += rng.uniform(-jitter, jitter)
        y += rng.uniform(-jitter, jitter)
        img = _render_shapes([*still, Shape(mover.shape, mover.colour, x, y, mover.r)], size, scale)
        img = _degrade(img, artefact, noise_seed + i, scale)
        out.append(np.asarray(img, dtype=np.uint8))
    return out


# --- small scale: three media projects --------------------------------------------------------

# Pixels per layout unit. Scenes are laid out (and every random draw made) on the small canvases
# the world was first built with -- VQA 128 (stills) and 96 (clips), text-to-image 96,
# text-to-video 64 units -- and drawn at this many pixels per unit, so the media are 256-512 px
# while the answers, judgments and truth stay what those draws made them.
VQA_SCALE = 3
T2I_SCALE = 4
T2V_SCALE = 4


def _rng(seed: int, project: str, index: int) -> random.Random:
    # A str seed is hashed with SHA-512 by random.Random: stable across processes and runs.
    return random.Random(f"{seed}/{project}/{index}")


def _int_seed(rng: random.Random) -> int:
    return rng.getrandbits(32)


def _pick_models(models: Sequence[ModelProfile], n: int, rng: random.Random) -> list[ModelProfile]:
    return rng.sample(list(models), n)


def _settings(
    mode: str, n: int, instructions: str, *, k: int = 3, ties: bool = True
) -> dict[str, Any]:
    return {
        "mode": mode,
        "candidates_per_task": n,
        "annotators_per_task": k,
        "ties_allowed": ties,
        "blind": True,
        # Alice and Bob meet the gold tasks too (one served task in ten while any is left),
        # so a person trying the demo lands in the failed-gold queue when they miss one.
        "gold_rate": GOLD_RATE,
        "instructions": instructions,
    }


def _vqa_scene(rng: random.Random) -> tuple[str, list[Shape], Question, int | None]:
    """A 128 px picture and a question about it (kind, shapes, question, word-sign or None)."""
    size, grid = 128, 4
    kind = rng.choice(("count", "count", "colour", "exists", "word"))
    colours = list(COLOURS)
    if kind == "count":
        colour, shape = rng.choice(colours), rng.choice(SHAPES)
        count = rng.randint(1, 5)
        items = [(shape, colour)] * count
        for _ in range(rng.randint(2, 5)):
            # Distractors share the colour or the shape, never both: they test the question.
            if rng.random() < 0.5:
                items.append((rng.choice([s for s in SHAPES if s != shape]), colour))
            else:
                items.append((shape, rng.choice([c for c in colours if c != colour])))
        rng.shuffle(items)
        return (
            kind,
            _layout(rng, items, size=size, grid=grid),
            _count_question(colour, shape, count, "picture"),
            None,
        )
    if kind == "colour":
        shape, colour = rng.choice(SHAPES), rng.choice(colours)
        items = [(shape, colour)] + [
            (rng.choice([s for s in SHAPES if s != shape]), rng.choice(colours))
            for _ in range(rng.randint(2, 5))
        ]
        others = [c for c in colours if c != colour]
        return (
            kind,
            _layout(rng, items, size=size, grid=grid),
            _colour_question(shape, colour, rng.sample(others, 3), "picture"),
            None,
        )
    if kind == "exists":
        colour, shape = rng.choice(colours), rng.choice(SHAPES)
        present = rng.random() < 0.5
        items = [(shape, colour)] if present else []
        total = rng.randint(4, 7)
        while len(items) < total:
            item = (rng.choice(SHAPES), rng.choice(colours))
            if item != (shape, colour):
                items.append(item)
        rng.shuffle(items)
        return (
            kind,
            _layout(rng, items, size=size, grid=grid),
            _exists_question(colour, shape, present),
            None,
        )
    word_index = rng.randrange(len(WORDS))
    items = [(rng.choice(SHAPES), rng.choice(colours)) for _ in range(rng.randint(2, 4))]
    # The sign takes the top half; shapes go in the bottom two rows.
    shapes = _layout(rng, items, size=size, grid=grid, rows=(2, 3))
    return kind, shapes, _word_question(WORDS[word_index], rng), word_index


def _render_vqa_picture(shapes: Sequence[Shape], word_index: int | None) -> bytes:
    k = VQA_SCALE
    img = _render_shapes(shapes, 128, k)
    if word_index is not None:
        draw = ImageDraw.Draw(img)
        draw.rectangle(
            (14 * k, 10 * k, 114 * k, 56 * k), fill=(255, 255, 255), outline=OUTLINE, width=2 * k
        )
        draw.text(
            (64 * k, 33 * k), WORDS[word_index], fill=(20, 20, 20), font=_font(26 * k), anchor="mm"
        )
    return _png(img)


@dataclass
class _Truth:
    """A project builder's hidden truth as it goes: each prompt's and each candidate's, and
    how many gold prompts so far."""

    prompts: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, Any] = field(default_factory=dict)
    gold_count: int = 0

    def candidate(self, cid: str, pid: str, model: ModelProfile, quality: float, **more) -> None:
        self.candidates[cid] = {"prompt": pid, "model": model.name, "quality": quality, **more}

    def gold(self, index: int, quality: dict[str, float]) -> bool:
        """Whether prompt ``index`` is gold (`_is_gold`), counted."""
        gold = _is_gold(index, quality, self.gold_count)
        self.gold_count += gold
        return gold

    def finish(self, project: DemoProject, mode: str) -> DemoProject:
        project.truth = {"mode": mode, "prompts": self.prompts, "candidates": self.candidates}
        return project


def _vqa_project(
    seed: int, models: Sequence[ModelProfile], annotators: Sequence[AnnotatorProfile], count: int
) -> DemoProject:
    project = DemoProject(
        name=PROJECT_VQA,
        slug="vqa_ranking",
        settings=_settings(
            "ranking",
            4,
            "Look at the picture or video, read the question, and rank the four answers from "
            "best to worst. A correct answer that explains itself beats a bare correct one; "
            "a wrong answer is worse than a hedged correct one. Use ties only when two answers "
            "are equally good.",
        ),
    )
    truth = _Truth()
    for i in range(count):
        rng = _rng(seed, "vqa", i)
        pid = f"s{seed}-vqa-{i:04d}"
        row: dict[str, Any] = {"id": pid}
        # Every fifth prompt (from the second on, so tiny worlds have one) asks about a
        # short clip instead of a still picture.
        if i % 5 == 1:
            colours = list(COLOURS)
            colour, shape = rng.choice(colours), rng.choice(SHAPES)
            direction = rng.choice(DIRECTIONS)
            question = _direction_question(colour, shape, direction)
            still = _layout(
                rng,
                [
                    (s, c)
                    for s, c in ((rng.choice(SHAPES), rng.choice(colours)) for _ in range(2))
                    if (s, c) != (shape, colour)
                ],
                size=96,
                grid=3,
            )
            # The mover is drawn last, over any still shape its lane crosses.
            lane = rng.uniform(20, 76)
            mover = Shape(shape, colour, lane, lane, 11)
            frames = _motion_frames(
                mover=mover,
                direction=direction,
                still=still,
                size=96,
                frames=20,
                rng=rng,
                scale=VQA_SCALE,
            )
            rel = f"media/vqa/{pid}.mp4"
            project.media[rel] = encode_mp4(frames)
            row["video"] = rel
            scene = {"kind": "direction", "moving": f"{colour} {shape}"}
        else:
            kind, shapes, question, word_index = _vqa_scene(rng)
            rel = f"media/vqa/{pid}.png"
            project.media[rel] = _render_vqa_picture(shapes, word_index)
            row["image"] = rel
            scene = {"kind": kind, "shapes": [f"{s.colour} {s.shape}" for s in shapes]}
        row["prompt"] = question.text
        row["metadata"] = {"demo": "vqa", "question_type": question.kind}
        candidates = []
        quality: dict[str, float] = {}
        used: set[str] = set()
        for slot, model in enumerate(_pick_models(models, 4, rng)):
            cid = f"{pid}-c{slot}"
            text, category, q = _text_answer(question, model.skill, rng)
            text = _distinct(text, used)
            candidates.append({"id": cid, "model": model.name, "kind": "text", "text": text})
            quality[cid] = q
            truth.candidate(cid, pid, model, q, category=category)
        row["candidates"] = candidates
        gold = truth.gold(i, quality)
        _judge_ranking(
            row, i, quality, gold, seed, project.slug, annotators, rng, video="video" in row
        )
        truth.prompts[pid] = {"answer": question.answer, "scene": scene, "gold": gold}
        project.rows.append(row)
    return truth.finish(project, "ranking")


def _attributes(skill: float, difficulty: dict[str, float], rng: random.Random) -> dict[str, bool]:
    return {name: skill + rng.gauss(0.0, ATTRIBUTE_NOISE) > d for name, d in difficulty.items()}


def _artefact(skill: float, rng: random.Random) -> float:
    """How rough a model's rendering is: weak models blur, jitter and grain more."""
    return round(_clamp01(0.75 * (1.0 - skill) + rng.gauss(0.0, 0.1) - 0.1), 4)


def _other(rng: random.Random, options: Sequence[str], value: str) -> str:
    return rng.choice([o for o in options if o != value])


def _t2i_project(
    seed: int, models: Sequence[ModelProfile], annotators: Sequence[AnnotatorProfile], count: int
) -> DemoProject:
    project = DemoProject(
        name=PROJECT_T2I,
        slug="t2i_ranking",
        settings=_settings(
            "ranking",
            4,
            "Rank the four generated images by how faithfully they show the prompt: the right "
            "number of shapes, the right colour, the right shape, and a clean picture.",
        ),
    )
    truth = _Truth()
    for i in range(count):
        rng = _rng(seed, "t2i", i)
        pid = f"s{seed}-t2i-{i:04d}"
        colour, shape, n = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.randint(1, 4)
        text = f"Draw exactly {_plural(n, f'{colour} {shape}')} on a plain light background."
        row: dict[str, Any] = {
            "id": pid,
            "prompt": text,
            "metadata": {"demo": "text-to-image"},
        }
        candidates = []
        quality: dict[str, float] = {}
        for slot, model in enumerate(_pick_models(models, 4, rng)):
            cid = f"{pid}-c{slot}"
            ok = _attributes(model.skill, T2I_DIFFICULTY, rng)
            artefact = _artefact(model.skill, rng)
            if ok["count"]:
                drawn_n = n
            else:  # off by one or two, never zero: an empty canvas is a different failure
                drawn_n = n + rng.choice((-1, 1, 2)) if n > 1 else rng.choice((2, 3))
            drawn_colour = colour if ok["colour"] else _other(rng, list(COLOURS), colour)
            drawn_shape = shape if ok["shape"] else _other(rng, SHAPES, shape)
            shapes = _layout(rng, [(drawn_shape, drawn_colour)] * drawn_n, size=96, grid=3)
            img = _degrade(
                _render_shapes(shapes, 96, T2I_SCALE), artefact, _int_seed(rng), T2I_SCALE
            )
            rel = f"media/t2i/{cid}.png"
            project.media[rel] = _png(img)
            q = sum(T2I_WEIGHTS[a] for a, good in ok.items() if good) + T2I_WEIGHTS["clean"] * (
                1 - artefact
            )
            q = round(_clamp01(q + rng.gauss(0.0, 0.02)), 4)
            candidates.append({"id": cid, "model": model.name, "kind": "image", "image": rel})
            quality[cid] = q
            drawn = {"count": drawn_n, "colour": drawn_colour, "shape": drawn_shape}
            truth.candidate(cid, pid, model, q, drawn=drawn, artefact=artefact)
        row["candidates"] = candidates
        gold = truth.gold(i, quality)
        _judge_ranking(row, i, quality, gold, seed, project.slug, annotators, rng, video=False)
        truth.prompts[pid] = {
            "count": n,
            "colour": colour,
            "shape": shape,
            "gold": gold,
        }
        project.rows.append(row)
    return truth.finish(project, "ranking")


def _t2v_project(
    seed: int, models: Sequence[ModelProfile], annotators: Sequence[AnnotatorProfile], count: int
) -> DemoProject:
    project = DemoProject(
        name=PROJECT_T2V,
        slug="t2v_pairwise",
        settings=_settings(
            "pairwise",
            2,
            "Watch both clips and pick the one that better shows the prompt: the right shape "
            "and colour moving in the right direction, smoothly. Choose 'both bad' when neither "
            "does.",
        ),
    )
    truth = _Truth()
    size, frames = 64, 16
    for i in range(count):
        rng = _rng(seed, "t2v", i)
        pid = f"s{seed}-t2v-{i:04d}"
        colour, shape, direction = (
            rng.choice(list(COLOURS)),
            rng.choice(SHAPES),
            rng.choice(DIRECTIONS),
        )
        row: dict[str, Any] = {
            "id": pid,
            "prompt": f"{_a(colour).capitalize()} {shape} moving {direction} across the frame.",
            "metadata": {"demo": "text-to-video"},
        }
        candidates = []
        quality: dict[str, float] = {}
        # Three candidates per prompt: the importer's pair plan then covers all three pairs,
        # so the simulated judgments land on the tasks real annotators are served.
        for slot, model in enumerate(_pick_models(models, 3, rng)):
            cid = f"{pid}-c{slot}"
            ok = _attributes(model.skill, T2V_DIFFICULTY, rng)
            artefact = _artefact(model.skill, rng)
            drawn = {
                "direction": direction if ok["direction"] else _other(rng, DIRECTIONS, direction),
                "colour": colour if ok["colour"] else _other(rng, list(COLOURS), colour),
                "shape": shape if ok["shape"] else _other(rng, SHAPES, shape),
            }
            lane = rng.uniform(16, 48)
            clip = _motion_frames(
                mover=Shape(drawn["shape"], drawn["colour"], lane, lane, 9),
                direction=drawn["direction"],
                still=[],
                size=size,
                frames=frames,
                rng=rng,
                jitter=6.0 * artefact,
                artefact=artefact * 0.6,
                noise_seed=_int_seed(rng),
                scale=T2V_SCALE,
            )
            rel = f"media/t2v/{cid}.mp4"
            project.media[rel] = encode_mp4(clip)
            q = sum(T2V_WEIGHTS[a] for a, good in ok.items() if good) + T2V_WEIGHTS["clean"] * (
                1 - artefact
            )
            q = round(_clamp01(q + rng.gauss(0.0, 0.02)), 4)
            candidates.append({"id": cid, "model": model.name, "kind": "video", "video": rel})
            quality[cid] = q
            truth.candidate(cid, pid, model, q, drawn=drawn, artefact=artefact)
        row["candidates"] = candidates
        gold = truth.gold(i, quality)
        ids = list(quality)
        judgments = []
        gold_rng = _rng(seed, f"{project.slug}/gold", i) if gold else None
        for a, b in ((0, 1), (1, 2), (0, 2)):
            judgments += _judge_task(
                pid=pid,
                task_ids=[ids[a], ids[b]],
                quality=quality,
                annotators=annotators,
                count=_coverage(rng, 3),
                rng=rng,
                gold_rng=gold_rng,
                pairwise=True,
                video=True,
                key_suffix=f":{a}{b}",
            )
        row["judgments"] = judgments
        truth.prompts[pid] = {
            "colour": colour,
            "shape": shape,
            "direction": direction,
            "gold": gold,
        }
        project.rows.append(row)
    return truth.finish(project, "pairwise")


# --- MR2Bench scale -------------------------------------------------------------------------


def _mr2bench_project(
    seed: int, models: Sequence[ModelProfile], annotators: Sequence[AnnotatorProfile], count: int
) -> DemoProject:
    """MR2Bench-Video-sized sparse pairwise data, text only.

    Per prompt all 19 models answer; the judged pairs form a random Hamiltonian cycle over
    them (19 distinct pairs, every model in two, the comparison graph connected, as a
    leaderboard needs); a panel of 3-5 annotators judges each pair once, and 0-2 pairs (one
    on average) get a second judgment from another panel member, for agreement statistics:
    ~20 judgments per prompt.
    """
    project = DemoProject(
        name=PROJECT_MR2,
        slug="mr2bench_pairwise",
        settings=_settings(
            "pairwise",
            2,
            "Pick the better answer: correct beats wrong, and an explained answer beats a bare "
            "one.",
            # Sparse collection: one vote per pair is the plan, as in MR2Bench-Video.
            k=1,
        ),
    )
    truth = _Truth()
    for i in range(count):
        rng = _rng(seed, "mr2", i)
        pid = f"s{seed}-mr2-{i:05d}"
        question = _arithmetic_question(rng)
        order = list(models)
        rng.shuffle(order)
        candidates = []
        quality: dict[str, float] = {}
        used: set[str] = set()
        for slot, model in enumerate(order):
            cid = f"{pid}-c{slot:02d}"
            text, category, q = _text_answer(question, model.skill, rng)
            text = _distinct(text, used)
            candidates.append({"id": cid, "model": model.name, "kind": "text", "text": text})
            quality[cid] = q
            truth.candidate(cid, pid, model, q, category=category)
        ids = list(quality)
        cycle = ids[:]
        rng.shuffle(cycle)
        pairs = [(cycle[j], cycle[(j + 1) % len(cycle)]) for j in range(len(cycle))]
        panel = _pick_annotators(annotators, rng.randint(3, 5), rng)
        plan = [(pair, rng.choice(panel)) for pair in pairs]
        for _ in range(rng.choice((0, 1, 2))):
            pair, first = rng.choice(plan[: len(pairs)])
            plan.append((pair, rng.choice([a for a in panel if a is not first])))
        judgments = []
        for n, (pair, annotator) in enumerate(plan):
            presented = list(pair)
            rng.shuffle(presented)
            judgments.append(
                {
                    "annotator": annotator.username,
                    "pair": presented,
                    "outcome": simulate_pair(annotator, presented, quality, rng),
                    "presented_order": presented,
                    "duration_ms": simulate_duration(annotator, rng, slots=2),
                    "source": DEMO_SOURCE,
                    "key": f"demo:{pid}:{n}",
                }
            )
        project.rows.append(
            {
                "id": pid,
                "prompt": question.text,
                "metadata": {"demo": "mr2bench", "question_type": question.kind},
                "candidates": candidates,
                "judgments": judgments,
            }
        )
        truth.prompts[pid] = {"answer": question.answer, "panel": [a.username for a in panel]}
    return truth.finish(project, "pairwise")


# --- small helpers --------------------------------------------------------------------------


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _open01(rng: random.Random) -> float:
    """Uniform in (0, 1): ``log`` of 0 is undefined."""
    u = rng.random()
    while u == 0.0:
        u = rng.random()
    return u
