"""``make_demo``: generate the synthetic demo world and load it through the import service.

The world is written as Quorum JSONL + media under ``DATA_DIR/demo/<scale>`` (or ``--out``) and
imported with :func:`annotate.services.import_file`, the same path a user's upload takes; the
hidden ground truth stays in ``ground_truth.json`` beside the files. Re-running with the same
seed creates nothing new: prompts and candidates match by external id, judgments by key.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from annotate.demo_world import (
    GROUND_TRUTH_FILE,
    SCALES,
    DemoWorld,
    ProjectTruth,
    generate_world,
    write_world,
)
from annotate.importing import ImportRejected
from annotate.models import Candidate, Judgment, Membership, Project, Prompt, Task
from annotate.services import flags_recompute_job, import_file

DEMO_PASSWORD = "quorum-demo"
# username -> (is superuser, role in every demo project)
DEMO_USERS = {
    "admin": (True, Membership.Role.ADMIN),
    "alice": (False, Membership.Role.ANNOTATOR),
    "bob": (False, Membership.Role.ANNOTATOR),
    "rita": (False, Membership.Role.REVIEWER),
}


class Command(BaseCommand):
    help = (
        "Generate a deterministic synthetic demo world (projects, media, model answers, "
        "simulated annotators' judgments) and import it. Same seed twice: nothing new."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
        parser.add_argument("--scale", choices=SCALES, default="small")
        parser.add_argument(
            "--out", type=Path, help="folder for the JSONL, media and ground truth "
        )
        parser.add_argument(
            "--prompts",
            type=int,
            help="prompts per project (small) or in all (mr2bench), for quick runs",
        )
        parser.add_argument(
            "--users",
            action="store_true",
            help=f"also create demo logins admin, alice, bob, rita (password {DEMO_PASSWORD!r})",
        )

    def handle(
        self,
        *args: object,
        seed: int,
        scale: str,
        out: Path | None,
        prompts: int | None,
        users: bool,
        **options: object,
    ) -> None:
        started = time.perf_counter()
        out_dir = (out or Path(settings.DATA_DIR) / "demo" / scale).resolve()
        _refuse_public_folder(out_dir)
        if prompts is not None and prompts < 1:
            raise CommandError("--prompts must be at least 1")

        world = generate_world(seed, scale, prompts=prompts)
        generated = time.perf_counter()
        try:
            paths = write_world(world, out_dir)
        except FileExistsError as exc:
            raise CommandError(str(exc)) from None
        written = time.perf_counter()

        totals = dict.fromkeys(("prompts", "candidates", "tasks", "judgments"), 0)
        for project in world.projects:
            t0 = time.perf_counter()
            try:
                result = import_file(path=paths[project.name], project_name=project.name)
            except ImportRejected as exc:
                raise CommandError(f"{paths[project.name]}: {exc}") from None
            for key in totals:
                totals[key] += result.counts.get(key, 0)
            counts = ", ".join(f"{result.counts.get(k, 0)} {k}" for k in totals)
            self.stdout.write(
                f"  {project.name}: {len(project.rows)} prompts, {project.candidate_count} "
                f"candidates, {project.judgment_count} judgments in file; new: {counts} "
                f"({time.perf_counter() - t0:.1f} s)"
            )
        gold = _mark_gold(world)
        if gold:
            self.stdout.write(f"  {gold} gold tasks: their hidden true ranking is the gold answer")
        imported = time.perf_counter()

        if users:
            self._create_users([p.name for p in world.projects])

        names = [p.name for p in world.projects]
        in_db = {
            "prompts": Prompt.objects.filter(project__name__in=names).count(),
            "candidates": Candidate.objects.filter(project__name__in=names).count(),
            "tasks": Task.objects.filter(project__name__in=names).count(),
            "judgments": Judgment.objects.filter(project__name__in=names).count(),
        }
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo world seed={seed} scale={scale}: {len(world.projects)} projects; "
                + ", ".join(f"{totals[k]} new {k}" for k in totals)
                + "; in the database "
                + ", ".join(f"{v} {k}" for k, v in in_db.items())
            )
        )
        self.stdout.write(
            f"Files and ground truth: {out_dir} ({GROUND_TRUTH_FILE})\n"
            f"Time: generate {generated - started:.1f} s, write {written - generated:.1f} s, "
            f"import {imported - written:.1f} s, total {time.perf_counter() - started:.1f} s"
        )

    def _create_users(self, project_names: list[str]) -> None:
        """Demo logins and memberships; existing users keep their password (and roles)."""
        User = get_user_model()
        projects = list(Project.objects.filter(name__in=project_names))
        lines = []
        with transaction.atomic():
            for username, (superuser, role) in DEMO_USERS.items():
                user = User.objects.filter(username=username).first()
                if user is None:
                    if superuser:
                        user = User.objects.create_superuser(
                            username=username, email="", password=DEMO_PASSWORD
                        )
                    else:
                        user = User.objects.create_user(username=username, password=DEMO_PASSWORD)
                    note = f"password {DEMO_PASSWORD}"
                else:
                    # Never reset a password here: on a real database that would hand out
                    # a known login to an existing account.
                    note = "already existed, password unchanged"
                for project in projects:
                    Membership.objects.get_or_create(
                        project=project, user=user, defaults={"role": role}
                    )
                lines.append(f"  {username:6} {role:9} {note}")
        self.stdout.write("Demo logins:\n" + "\n".join(lines))


def _mark_gold(world: DemoWorld) -> int:
    """Makes the tasks of the world's gold prompts gold, with the hidden true ranking (restricted
    to each task's candidates) as the answer. The JSONL format has no gold field, so this is done
    after the import; a project whose gold changed gets a flag recompute (its failed-gold flags).
    Returns how many tasks were changed."""
    changed = 0
    for demo in world.projects:
        truth = ProjectTruth(
            mode=demo.truth["mode"],
            file=demo.filename,
            prompts=demo.truth["prompts"],
            candidates=demo.truth["candidates"],
            annotator_accuracy={},
        )
        gold_prompts = truth.gold_prompts()
        if not gold_prompts:
            continue
        tasks = list(
            Task.objects.filter(
                project__name=demo.name, prompt__external_id__in=gold_prompts
            ).prefetch_related("slots__candidate")
        )
        todo = []
        for task in tasks:
            pk_of = {slot.candidate.external_id: slot.candidate_id for slot in task.slots.all()}
            ranking = [[pk_of[c] for c in group] for group in truth.true_groups(list(pk_of))]
            if not task.is_gold or task.gold_ranking != ranking:
                task.is_gold, task.gold_ranking = True, ranking
                todo.append(task)
        if todo:
            with transaction.atomic():
                Task.objects.bulk_update(todo, ["is_gold", "gold_ranking"])
                flags_recompute_job(project_id=todo[0].project_id)
        changed += len(todo)
    return changed


def _refuse_public_folder(out_dir: Path) -> None:
    """The demo folder holds the ground truth: it must not be served as media or static files."""
    for public in (settings.MEDIA_ROOT, settings.STATIC_ROOT):
        if not public:
            continue
        root = Path(public).resolve()
        if out_dir == root or root in out_dir.parents:
            raise CommandError(
                f"--out {out_dir} is inside {root}, which is served publicly; "
                "the ground truth must stay private"
            )
