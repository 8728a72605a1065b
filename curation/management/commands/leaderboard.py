"""``leaderboard``: Bradley-Terry leaderboard of a project's models with bootstrap CIs."""

from __future__ import annotations

import json
import math

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from curation import consensus as C
from curation import graph as G
from curation import selectors
from curation.management.commands._project import project_by_name_or_id


class Command(BaseCommand):
    help = (
        "Print the Bradley-Terry leaderboard of PROJECT's models (Chatbot Arena style: ties "
        "count half a win, 95%% bootstrap confidence intervals) and how many votes hold the "
        "top in place."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project name (or id)")
        parser.add_argument(
            "--bootstrap",
            type=int,
            default=settings.QUORUM_LEADERBOARD_BOOTSTRAP,
            help="bootstrap rounds (default: QUORUM_LEADERBOARD_BOOTSTRAP, "
            f"now {settings.QUORUM_LEADERBOARD_BOOTSTRAP})",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--ties", choices=["half", "drop"], default="half")
        parser.add_argument("--max-removals", type=int, default=500, help="stability search limit")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: object, **opts: object) -> None:
        project = project_by_name_or_id(str(opts["project"]))
        data = selectors.project_data(project=project, with_presented=False, with_times=False)
        votes = selectors.usable_votes(data, data.votes)
        model_of = {c.id: c.model_name for c in data.candidates.values()}
        comparisons = C.model_comparisons(votes, model_of)
        rows = G.bradley_terry_leaderboard(
            comparisons,
            ties=opts["ties"],
            bootstrap=opts["bootstrap"],
            seed=opts["seed"],  # type: ignore[arg-type]
        )
        stability = G.leaderboard_stability(
            selectors.main_component(rows, comparisons),
            ties=opts["ties"],
            max_removals=opts["max_removals"],  # type: ignore[arg-type]
        )
        if opts["json"]:
            self.stdout.write(json.dumps(_as_json(rows, stability), indent=1))
            return
        self.stdout.write(
            f"Leaderboard of {project.name!r}: {len(comparisons)} votes, ties = "
            f"{'half a win' if opts['ties'] == 'half' else 'dropped'}, 95% bootstrap CI "
            f"({opts['bootstrap']} rounds)"
        )
        several = len({r.component for r in rows}) > 1
        width = max([len(str(r.model)) for r in rows] + [5])
        self.stdout.write(
            f"{'#':>3}  {'model':<{width}}  {'score':>7}  {'95% CI':>17}  {'width':>6}  {'votes':>6}"
            + ("  part" if several else "")
        )
        for i, r in enumerate(rows, start=1):
            ci = "n/a" if math.isnan(r.ci_low) else f"{r.ci_low:7.1f} - {r.ci_high:7.1f}"
            width_ci = "" if math.isnan(r.ci_low) else f"{r.ci_high - r.ci_low:6.1f}"
            self.stdout.write(
                f"{i:>3}  {str(r.model):<{width}}  {r.score:7.1f}  {ci:>17}  {width_ci:>6}  "
                f"{r.n_comparisons:>6}" + (f"  {r.component}" if several else "")
            )
        if several:
            self.stdout.write(
                "Scores of different parts are not comparable: no vote links them. "
                "Stability is measured on part 0."
            )
        if stability.votes_to_change is None:
            self.stdout.write(
                f"Stability: removing up to {len(stability.removed)} votes (greedy) does not "
                f"dethrone {stability.leader}."
            )
        else:
            share = stability.votes_to_change / max(1, stability.n_votes)
            self.stdout.write(
                f"Stability: removing {stability.votes_to_change} of {stability.n_votes} votes "
                f"({share:.2%}) puts {stability.new_leader} above {stability.leader} "
                "(greedy search: an upper bound on the fewest)."
            )


def _as_json(rows: list[G.LeaderboardRow], stability: G.StabilityReport) -> dict:
    def finite(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 3)

    return {
        "rows": [
            {
                "model": r.model,
                "score": round(r.score, 3),
                "ci_low": finite(r.ci_low),
                "ci_high": finite(r.ci_high),
                "comparisons": r.n_comparisons,
                "component": r.component,
            }
            for r in rows
        ],
        "stability": {
            "leader": stability.leader,
            "votes_to_change": stability.votes_to_change,
            "new_leader": stability.new_leader,
            "votes": stability.n_votes,
        },
    }
