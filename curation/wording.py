"""Review actions and export options in plain words for pages. Pure: no Django.

Candidates are named by the letters the review pages show (``letter_of``: candidate id ->
letter); an id without a letter (a candidate deleted since) is written ``#id``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from annotate.wording import plural


def ranking_text(ranking: Sequence[Sequence[int]], letter_of: Mapping[int, str]) -> str:
    """``A > B = C > D`` for tie groups of candidate ids, best first."""
    return " > ".join(" = ".join(letter_of.get(c, f"#{c}") for c in group) for group in ranking)


def _decision_text(decision: Mapping[str, Any], letter_of: Mapping[int, str]) -> str:
    final = decision.get("final_ranking")
    ranking = f"final ranking {ranking_text(final, letter_of)}" if final else ""
    if decision.get("discarded"):
        return "discarded" + (f" ({ranking})" if ranking else "")
    return ranking or "no final ranking (the consensus counts)"


def _tasks_text(tasks: Mapping[str, Mapping[str, Any]], letter_of: Mapping[int, str]) -> str:
    if any("is_gold" in t for t in tasks.values()):  # a gold mark: only the gold fields
        gold = [t for t in tasks.values() if t.get("is_gold")]
        if not gold:
            return "not gold"
        answers = sorted({ranking_text(t.get("gold_ranking") or [], letter_of) for t in gold})
        return f"{plural(len(gold), 'task', 'tasks')} gold: {'; '.join(answers)}"
    statuses = Counter(t.get("status", "?") for t in tasks.values())
    text = ", ".join(
        f"{plural(n, 'task', 'tasks')} {status}" for status, n in sorted(statuses.items())
    )
    required = sorted(
        {t["required_judgments"] for t in tasks.values() if t.get("required_judgments")}
    )
    if required:
        span = str(required[0]) if len(required) == 1 else f"{required[0]}-{required[-1]}"
        text += f", {span} judgments wanted"
    return text


def action_change_text(
    kind: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    letter_of: Mapping[int, str],
) -> tuple[str, str]:
    """What a review action (``curation.models.ReviewAction``) changed: (before, after) text.

    ``kind`` is the action's kind; ``before`` and ``after`` its stored states.
    """
    if kind == "dismiss_flag":
        return "flag open", "flag dismissed"
    sides = []
    for state in (before, after):
        parts = []
        if "decision" in state:
            parts.append(_decision_text(state["decision"], letter_of))
        if "tasks" in state:
            parts.append(_tasks_text(state["tasks"], letter_of))
        if "marked_unreliable" in state:
            parts.append("marked unreliable" if state["marked_unreliable"] else "counted normally")
        sides.append(parts)
    if after.get("extra"):
        sides[1].append(f"+{plural(after['extra'], 'judgment', 'judgments')} per task")
    if after.get("flags"):
        sides[1].append(f"{plural(len(after['flags']), 'flag', 'flags')} resolved")
    return "; ".join(sides[0]) or "–", "; ".join(sides[1]) or "–"


def export_options_text(options: Mapping[str, Any]) -> list[str]:
    """An export's options (``curation.exporting.ExportOptions`` as stored), one phrase each;
    a missing option reads as its default."""
    splits = options.get("splits") or {"train": 1.0}
    phrases = [
        "denoised (feedback arcs removed)"
        if options.get("denoise", True)
        else "majority vote, not denoised",
        "reviewer decisions applied"
        if options.get("use_decisions", True)
        else "reviewer decisions ignored",
    ]
    if options.get("rm_evaluator"):
        phrases.append("reward model as an evaluator")
    if options.get("model_prior"):
        phrases.append("model-strength prior")
    if options.get("min_agreement") is not None:
        phrases.append(f"agreement at least {options['min_agreement']:g}")
    phrases.append(
        "splits "
        + ", ".join(
            f"{name} {splits[name] * 100:.0f} %" for name in sorted(splits, key=_split_order)
        )
    )
    phrases.append(f"seed {options.get('seed', 0)}")
    phrases.append("media included" if options.get("include_media", True) else "no media files")
    return phrases


def verdict_text(
    *,
    ranking: Sequence[Sequence[int]],
    pair: Sequence[int] | None,
    outcome: str,
    letter_of: Mapping[int, str],
) -> str:
    """A judgment in letters: a ranking (tie groups, best first), or a pair outcome relative to
    ``pair``, the task's two candidates in slot order."""
    if pair is not None:
        a, b = (letter_of.get(c, f"#{c}") for c in pair)
        return {
            "a": f"{a} > {b}",
            "b": f"{b} > {a}",
            "tie": f"{a} = {b}",
            "both_bad": f"{a} = {b} (both bad)",
        }.get(outcome, outcome)
    return ranking_text(ranking, letter_of)


_SPLIT_ORDER = ("train", "validation", "val", "dev", "test")


def _split_order(name: str) -> tuple[int, str]:
    """Train first, test last: PostgreSQL's jsonb does not keep the options' key order."""
    return (_SPLIT_ORDER.index(name) if name in _SPLIT_ORDER else 3, name)
