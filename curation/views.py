"""Reviewer and admin pages of the curation app. Thin: permission check, selector or service,
render or redirect.

Who may see what: review queues, items, actions and history need a reviewer or admin role in
the project (or staff); the dashboard and exports need the admin role (or staff). Other
members of the project get 403, everybody else 404, anonymous users the login page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Max
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate.models import Judgment, Membership, Project, Prompt
from annotate.rendering import markdown_html
from annotate.services import JudgmentInvalid
from curation import consensus as C
from curation import selectors, services
from curation.download import iter_download_zip
from curation.exporting import (
    OVERRULED_FILE,
    ExportOptions,
    ExportOptionsInvalid,
    check_base_folder,
)
from curation.models import DatasetExport, Flag, ReviewAction
from curation.wording import export_options_text

PAGE_SIZE = 50
# Rows of an export's overruled-arc listing shown on its page (the file holds them all).
OVERRULED_PAGE_ROWS = 500


def _project_for(request: HttpRequest, project_id: int, *, admin: bool = False) -> Project:
    project = get_object_or_404(
        Project.objects.select_related("active_reward_model"), pk=project_id
    )
    allowed = (selectors.can_administer if admin else selectors.can_review)(
        user=request.user, project=project
    )
    if not allowed:
        if Membership.objects.filter(project=project, user=request.user).exists():
            raise PermissionDenied("your role in this project does not allow this page")
        raise Http404("no such project")
    return project


def _flag_for(project: Project, flag_id: int) -> Flag:
    return get_object_or_404(Flag.objects.select_related("prompt"), pk=flag_id, project=project)


def _back(request: HttpRequest, default: str) -> str:
    """The ``back`` URL posted by a form, if it points into this site; else ``default``."""
    back = request.POST.get("back", "")
    if back and url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return back
    return default


def _nav(project: Project, request: HttpRequest, active: str) -> dict[str, Any]:
    return {
        "project": project,
        "active": active,
        "is_admin": selectors.can_administer(user=request.user, project=project),
    }


# --------------------------------------------------------------------------- queues


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    projects = list(selectors.projects_for_reviewer(user=request.user).order_by("name"))
    rows = [(p, selectors.flags_summary(project=p)) for p in projects]
    return render(request, "curation/index.html", {"rows": rows})


@login_required
@require_GET
def queue(request: HttpRequest, project_id: int, kind: str | None = None) -> HttpResponse:
    project = _project_for(request, project_id)
    counts = selectors.queue_counts(project=project)
    if kind is None:
        kind = next((c["kind"] for c in counts if c["open"]), Flag.Kind.LOW_AGREEMENT)
    if kind not in Flag.Kind.values:
        raise Http404("no such queue")
    status = request.GET.get("status", Flag.Status.OPEN)
    if status not in Flag.Status.values:
        status = Flag.Status.OPEN
    page = Paginator(
        selectors.queue_flags(project=project, kind=kind, status=status), PAGE_SIZE
    ).get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    labels = selectors.evaluator_labels({f.evaluator for f in page.object_list if f.evaluator})
    for flag in page.object_list:
        flag.evaluator_label = labels.get(flag.evaluator, "")
    return render(
        request,
        "curation/queue.html",
        {
            **_nav(project, request, "queues"),
            "counts": counts,
            "kind": kind,
            "kind_label": Flag.Kind(kind).label,
            "status": status,
            "statuses": Flag.Status.choices,
            "page": page,
        },
    )


# --------------------------------------------------------------------------- data browser


@login_required
@require_GET
def browse(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project_for(request, project_id)
    filters = selectors.BrowseFilters.from_query(request.GET, blind=project.blind)
    page = Paginator(
        selectors.prompts_browse(project=project, filters=filters), PAGE_SIZE
    ).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "curation/browse.html",
        {
            **_nav(project, request, "data"),
            "filters": filters,
            "page": page,
            "query": query.urlencode(),
            "choices": selectors.browse_choices(project=project),
            "statuses": selectors.BROWSE_STATUSES,
            "sorts": [(key, label) for key, (_, label) in selectors.BROWSE_SORTS.items()],
            "flag_kinds": Flag.Kind.choices,
            "bulk_actions": BULK_ACTIONS.items(),
        },
    )


BULK_ACTIONS = {
    "more": "Request more judgments",
    "gold": "Mark gold (final ranking, else consensus)",
    "discard": "Discard",
}


@login_required
@require_POST
def browse_bulk(request: HttpRequest, project_id: int) -> HttpResponse:
    """One review action on each selected prompt, each recorded (and undoable) on its own."""
    project = _project_for(request, project_id)
    back = _back(request, reverse("curation:browse", args=[project.pk]))
    action = request.POST.get("action", "")
    if action not in BULK_ACTIONS:
        messages.error(request, "Choose an action for the selected prompts.")
        return redirect(back)
    ids = [int(raw) for raw in request.POST.getlist("prompt") if raw.isdigit()][:PAGE_SIZE]
    prompts = list(
        Prompt.objects.select_related("project").filter(project=project, pk__in=ids).order_by("id")
    )
    if not prompts:
        messages.error(request, "Select at least one prompt.")
        return redirect(back)
    extra = request.POST.get("extra", "1")
    done, skipped = 0, []
    for prompt in prompts:
        try:
            if action == "more":
                services.review_request_more(
                    actor=request.user,
                    prompt=prompt,
                    extra=int(extra) if extra.isdigit() else 0,
                )
            elif action == "gold":
                services.review_mark_gold(actor=request.user, prompt=prompt)
            else:
                services.review_discard_prompt(actor=request.user, prompt=prompt)
        except services.ReviewError as exc:
            skipped.append(f"{prompt.external_id}: {exc}")
        else:
            done += 1
    if done:
        messages.success(
            request,
            f"{BULK_ACTIONS[action]}: done on {done} prompt{'s' if done != 1 else ''}; "
            "each is in the history and can be undone.",
        )
    if skipped:
        messages.error(request, "Skipped " + "; ".join(skipped) + ".")
    return redirect(back)


# --------------------------------------------------------------------------- items


@login_required
@require_GET
def flag_detail(request: HttpRequest, project_id: int, flag_id: int) -> HttpResponse:
    project = _project_for(request, project_id)
    flag = _flag_for(project, flag_id)
    if flag.prompt_id is not None:
        return _render_prompt(request, project, flag.prompt, flag)
    item = selectors.evaluator_item(
        project=project,
        evaluator=flag.evaluator,
        judgment_ids=flag.details.get("examples", []),
    )
    return render(
        request,
        "curation/evaluator.html",
        {**_nav(project, request, "queues"), "item": item, "flag": flag, **_done(request, project)},
    )


@login_required
@require_GET
def prompt_detail(request: HttpRequest, project_id: int, prompt_id: int) -> HttpResponse:
    project = _project_for(request, project_id)
    prompt = get_object_or_404(Prompt, pk=prompt_id, project=project)
    return _render_prompt(request, project, prompt, None)


@login_required
@require_GET
def evaluator_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project_for(request, project_id)
    evaluator = request.GET.get("evaluator", "")
    if not selectors.judgments_of_evaluator(project=project, evaluator=evaluator).exists():
        raise Http404("no such annotator in this project")
    item = selectors.evaluator_item(project=project, evaluator=evaluator)
    return render(
        request,
        "curation/evaluator.html",
        {**_nav(project, request, "queues"), "item": item, "flag": None, **_done(request, project)},
    )


def _render_prompt(
    request: HttpRequest, project: Project, prompt: Prompt, flag: Flag | None
) -> HttpResponse:
    item = selectors.review_item(project=project, prompt=prompt)
    return render(
        request,
        "curation/item.html",
        {
            # A flag is worked from its queue; a prompt on its own is reached from the data.
            **_nav(project, request, "queues" if flag else "data"),
            "item": item,
            "flag": flag,
            "details": _flag_details(flag, item.letter_of) if flag else None,
            "history": selectors.prompt_history(prompt=prompt),
            **_done(request, project),
        },
    )


def _flag_details(flag: Flag, letter_of: dict[int, str]) -> list[str]:
    """Plain-language facts about a prompt flag, candidates named by their letters."""
    d = flag.details
    name = lambda c: letter_of.get(c, f"#{c}")  # noqa: E731
    if flag.kind == Flag.Kind.LOW_AGREEMENT:
        agreement = d.get("agreement")
        shown = f"{agreement:.2f}" if isinstance(agreement, int | float) else "not measured"
        lines = [f"Agreement {shown} over {d.get('comparisons', '?')} comparisons."]
        lines += [
            f"{name(x)} vs {name(y)}: {share:.0%} agree"
            for x, y, share in d.get("disputed_pairs", [])[:8]
        ]
        return lines
    if flag.kind == Flag.Kind.CYCLE:
        lines = [" > ".join(map(name, c)) + f" > {name(c[0])}" for c in d.get("cycles", [])[:5]]
        removed = ", ".join(f"{name(u)} > {name(v)} ({w})" for u, v, w in d.get("removed_arcs", []))
        return lines + [f"Denoising removes: {removed}"]
    if flag.kind == Flag.Kind.RM_DISAGREEMENT:
        return [
            f"Model prefers {name(c['model_prefers'])} over {name(c['over'])} "
            f"(p = {c['p_model']:.2f}); humans the other way ({c['human_share']:.0%} net)"
            for c in d.get("conflicts", [])[:8]
        ]
    if flag.kind == Flag.Kind.FAILED_GOLD:
        return [
            "Gold: " + selectors.ranking_letters(d.get("gold", []), letter_of),
            "Given: " + selectors.ranking_letters(d.get("given", []), letter_of),
            f"Gold pairs ordered the other way: {d['wrong_share']:.0%}"
            if isinstance(d.get("wrong_share"), int | float)
            else "Gold pairs ordered the other way: not measured",
        ]
    return [f"{k}: {v}" for k, v in d.items()]


def _done(request: HttpRequest, project: Project) -> dict[str, Any]:
    """The action just taken (``?done=<id>``), offered for undo."""
    done_id = request.GET.get("done", "")
    if not done_id.isdigit():
        return {"done": None}
    return {
        "done": ReviewAction.objects.filter(
            pk=int(done_id), project=project, undone_at__isnull=True
        ).first()
    }


# --------------------------------------------------------------------------- actions


def _after_action(
    request: HttpRequest, project: Project, action: ReviewAction, flag: Flag | None
) -> HttpResponse:
    """Next open flag of the same queue when working a queue, else back to the subject."""
    if flag is not None:
        following = selectors.next_open_flag(project=project, kind=flag.kind, after=flag)
        if following is not None:
            url = reverse("curation:flag", args=[project.pk, following.pk])
        else:
            url = reverse("curation:queue_kind", args=[project.pk, flag.kind])
    elif action.prompt_id:
        url = reverse("curation:prompt", args=[project.pk, action.prompt_id])
    else:
        url = reverse("curation:evaluator", args=[project.pk]) + f"?evaluator={action.evaluator}"
    sep = "&" if "?" in url else "?"
    return redirect(f"{url}{sep}done={action.pk}")


def _posted_flag(request: HttpRequest, project: Project) -> Flag | None:
    raw = request.POST.get("flag", "")
    return _flag_for(project, int(raw)) if raw.isdigit() else None


def ranking_from_form(post: Any, candidate_ids: list[int]) -> list[list[int]]:
    """Tie groups from ``rank_<candidate id>`` fields (1 = best, equal numbers tie)."""
    ranks: dict[int, int] = {}
    for cid in candidate_ids:
        raw = post.get(f"rank_{cid}", "").strip()
        if not raw.isdigit() or int(raw) < 1:
            raise JudgmentInvalid("ranking", "give every candidate a rank: a whole number from 1")
        ranks[cid] = int(raw)
    groups: dict[int, list[int]] = {}
    for cid, rank in sorted(ranks.items(), key=lambda kv: (kv[1], kv[0])):
        groups.setdefault(rank, []).append(cid)
    return [groups[r] for r in sorted(groups)]


@login_required
@require_POST
def prompt_action(
    request: HttpRequest, project_id: int, prompt_id: int, action: str
) -> HttpResponse:
    project = _project_for(request, project_id)
    prompt = get_object_or_404(
        Prompt.objects.select_related("project"), pk=prompt_id, project=project
    )
    flag = _posted_flag(request, project)
    note = request.POST.get("note", "")[:2000]
    try:
        if action == "accept":
            done = services.review_accept_consensus(
                actor=request.user, prompt=prompt, flag=flag, note=note
            )
        elif action == "rank":
            ranking = ranking_from_form(request.POST, services.prompt_candidate_ids(prompt))
            done = services.review_set_ranking(
                actor=request.user, prompt=prompt, ranking=ranking, flag=flag, note=note
            )
        elif action == "discard":
            done = services.review_discard_prompt(
                actor=request.user, prompt=prompt, flag=flag, note=note
            )
        elif action == "gold":
            done = services.review_mark_gold(
                actor=request.user, prompt=prompt, flag=flag, note=note
            )
        elif action == "more":
            extra = request.POST.get("extra", "1")
            done = services.review_request_more(
                actor=request.user,
                prompt=prompt,
                extra=int(extra) if extra.isdigit() else 0,
                flag=flag,
                note=note,
            )
        else:
            raise Http404("no such action")
    except (services.ReviewError, JudgmentInvalid) as exc:
        messages.error(request, str(exc))
        target = (
            reverse("curation:flag", args=[project.pk, flag.pk])
            if flag
            else reverse("curation:prompt", args=[project.pk, prompt.pk])
        )
        return redirect(target)
    messages.success(request, f"{done.get_kind_display()}: recorded as action #{done.pk}.")
    if action == "gold":  # resolves nothing: stay on the item
        here = (
            reverse("curation:flag", args=[project.pk, flag.pk])
            if flag
            else reverse("curation:prompt", args=[project.pk, prompt.pk])
        )
        return redirect(f"{here}?done={done.pk}")
    return _after_action(request, project, done, flag)


@login_required
@require_POST
def mark_unreliable(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project_for(request, project_id)
    flag = _posted_flag(request, project)
    evaluator = request.POST.get("evaluator", "")
    try:
        done = services.review_mark_unreliable(
            actor=request.user,
            project=project,
            evaluator=evaluator,
            flag=flag,
            note=request.POST.get("note", "")[:2000],
        )
    except services.ReviewError as exc:
        messages.error(request, str(exc))
        return redirect(_back(request, reverse("curation:queue", args=[project.pk])))
    messages.success(request, f"Marked unreliable: recorded as action #{done.pk}.")
    if flag is not None and flag.prompt_id is not None:
        # Marked from a prompt: stay on it to see the consensus without them.
        return redirect(reverse("curation:flag", args=[project.pk, flag.pk]) + f"?done={done.pk}")
    return _after_action(request, project, done, flag)


@login_required
@require_POST
def dismiss_flag(request: HttpRequest, project_id: int, flag_id: int) -> HttpResponse:
    project = _project_for(request, project_id)
    flag = _flag_for(project, flag_id)
    try:
        done = services.review_dismiss_flag(
            actor=request.user, flag=flag, note=request.POST.get("note", "")[:2000]
        )
    except services.ReviewError as exc:
        messages.error(request, str(exc))
        return redirect(reverse("curation:flag", args=[project.pk, flag.pk]))
    messages.success(request, f"Flag dismissed: recorded as action #{done.pk}.")
    return _after_action(request, project, done, flag)


@login_required
@require_POST
def undo(request: HttpRequest, project_id: int, action_id: int) -> HttpResponse:
    project = _project_for(request, project_id)
    action = get_object_or_404(ReviewAction, pk=action_id, project=project)
    try:
        services.review_action_undo(actor=request.user, action=action)
    except services.ReviewError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Undone: action #{action.pk} ({action.get_kind_display()}).")
    return redirect(_back(request, reverse("curation:history", args=[project.pk])))


@login_required
@require_GET
def history(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project_for(request, project_id)
    page = Paginator(selectors.review_history(project=project), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "curation/history.html",
        {
            **_nav(project, request, "history"),
            "page": page,
            "entries": selectors.history_entries(list(page.object_list)),
        },
    )


# --------------------------------------------------------------------------- dashboard


@login_required
@require_GET
def dashboard(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project_for(request, project_id, admin=True)
    # The leaderboard and the agreement series only change with new judgments.
    latest = Judgment.objects.filter(project=project).aggregate(n=Max("id"))["n"] or 0
    key = f"curation:dashboard:{project.pk}:{latest}:{Judgment.objects.filter(project=project).count()}"
    figures = cache.get(key)
    if figures is None:
        data = selectors.project_data(project=project, with_presented=False)
        rows, stability = selectors.project_leaderboard(data=data)
        periods = C.agreement_by_period(selectors.usable_votes(data, data.votes))
        figures = {
            "rows": rows,
            "stability": stability,
            "periods": periods,
            "judgments": len(data.votes),
        }
        cache.set(key, figures, 600)
    return render(
        request,
        "curation/dashboard.html",
        {
            **_nav(project, request, "dashboard"),
            "chart": selectors.leaderboard_chart(figures["rows"], figures["stability"]),
            "agreement": selectors.agreement_chart(figures["periods"]),
            "periods": figures["periods"],
            "judgments": figures["judgments"],
            "annotators": selectors.annotator_table(project=project),
            "counts": selectors.queue_counts(project=project),
            "summary": selectors.flags_summary(project=project),
            "exports": selectors.exports_for_project(project=project)[:5],
        },
    )


@login_required
@require_POST
def recompute(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project_for(request, project_id, admin=True)
    services.flags_recompute_enqueue(project_id=project.pk)
    messages.success(request, "Flag recompute queued; refresh in a moment.")
    return redirect(reverse("curation:dashboard", args=[project.pk]))


# --------------------------------------------------------------------------- exports


@login_required
@require_http_methods(["GET", "POST"])
def exports(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project_for(request, project_id, admin=True)
    error = None
    if request.method == "POST":
        try:
            options = ExportOptions.from_dict(_options_from_form(request.POST))
        except ExportOptionsInvalid as exc:
            error = str(exc)
        else:
            export = services.export_create(
                project=project, options=options, created_by=request.user
            )
            messages.success(request, f"Export v{export.version} queued.")
            return redirect(reverse("curation:exports", args=[project.pk]))
    return render(
        request,
        "curation/exports.html",
        {
            **_nav(project, request, "exports"),
            "exports": [
                (e, export_options_text(e.options))
                for e in selectors.exports_for_project(project=project)
            ],
            # The reward model as an evaluator is what makes denoising beat majority vote
            # (bench/README.md): on by default where the project has one.
            "defaults": ExportOptions(rm_evaluator=project.active_reward_model_id is not None),
            "error": error,
        },
        status=400 if error else 200,
    )


@login_required
@require_POST
def export_cancel(request: HttpRequest, export_id: int) -> HttpResponse:
    export = get_object_or_404(DatasetExport, pk=export_id)
    project = _project_for(request, export.project_id, admin=True)
    try:
        services.export_cancel(export=export, actor=request.user)
    except services.ExportNotCancellable as exc:
        messages.error(request, f"Not cancelled: {exc}.")
    else:
        messages.success(request, f"Export v{export.version} cancelled.")
    return redirect(reverse("curation:exports", args=[project.pk]))


def _options_from_form(post: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "denoise": post.get("denoise") == "on",
        "rm_evaluator": post.get("rm_evaluator") == "on",
        "use_decisions": post.get("use_decisions") == "on",
        "include_media": post.get("include_media") == "on",
        "model_prior": post.get("model_prior") == "on",
        "splits": post.get("splits", "train=1.0"),
    }
    raw_min = post.get("min_agreement", "").strip()
    if raw_min:
        try:
            options["min_agreement"] = float(raw_min)
        except ValueError:
            raise ExportOptionsInvalid("min_agreement", f"{raw_min!r} is not a number") from None
    raw_seed = post.get("seed", "0").strip() or "0"
    if not raw_seed.isdigit():
        raise ExportOptionsInvalid("seed", f"{raw_seed!r} is not a non-negative integer")
    options["seed"] = int(raw_seed)
    return options


def _export_for(request: HttpRequest, export_id: int) -> DatasetExport:
    export = get_object_or_404(DatasetExport.objects.select_related("project"), pk=export_id)
    _project_for(request, export.project_id, admin=True)
    if export.status != DatasetExport.Status.DONE or not export.path.is_dir():
        raise Http404("this export has no files (yet)")
    return export


@login_required
@require_GET
def export_download(request: HttpRequest, export_id: int) -> HttpResponse | StreamingHttpResponse:
    """The whole export folder as a zip, streamed while it is written.

    ``?base_folder=/abs/path``: the folder the zip's top folder will be unpacked as; JSONL
    paths are then absolute under it, for a trainer run on that machine.
    """
    export = _export_for(request, export_id)
    name = f"quorum-{export.project_id}-v{export.version}"
    base_folder = request.GET.get("base_folder") or None
    if base_folder is not None:
        try:
            base_folder = check_base_folder(base_folder)
        except ValueError as exc:
            return HttpResponse(str(exc), status=400, content_type="text/plain")
    response = StreamingHttpResponse(
        iter_download_zip(export.path, name, base_folder=base_folder),
        content_type="application/zip",
    )
    response["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    return response


@login_required
@require_GET
def export_datasheet(request: HttpRequest, export_id: int) -> HttpResponse:
    """The export's ``datasheet.md`` as a page."""
    export = _export_for(request, export_id)
    sheet = export.path / "datasheet.md"
    if not sheet.is_file():
        raise Http404("this export has no datasheet")
    return render(
        request,
        "curation/datasheet.html",
        {
            **_nav(export.project, request, "exports"),
            "export": export,
            "datasheet_html": markdown_html(sheet.read_text(encoding="utf-8")),
        },
    )


@login_required
@require_GET
def export_overruled(request: HttpRequest, export_id: int) -> HttpResponse:
    """The human arcs an export overrules (its ``overruled_arcs.jsonl``), strong ones first,
    each linked to its prompt's review page; ``?strong=1`` lists strong consensus only."""
    export = _export_for(request, export_id)
    listing = export.path / OVERRULED_FILE
    if not listing.is_file():
        raise Http404("this export predates the overruled-arc listing")
    with open(listing, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    strong_only = request.GET.get("strong") == "1"
    shown = [r for r in rows if r["strong"]] if strong_only else rows
    return render(
        request,
        "curation/overruled.html",
        {
            **_nav(export.project, request, "exports"),
            "export": export,
            "rows": shown[:OVERRULED_PAGE_ROWS],
            "total": len(rows),
            "strong": sum(r["strong"] for r in rows),
            "shown": len(shown),
            "strong_only": strong_only,
            "page_rows": OVERRULED_PAGE_ROWS,
        },
    )


@login_required
@require_GET
def export_file(request: HttpRequest, export_id: int, path: str) -> FileResponse:
    """One file of an export (e.g. ``datasheet.md``), never anything outside its folder."""
    export = _export_for(request, export_id)
    root = export.path.resolve()
    target = (root / path).resolve()
    if root not in target.parents or not target.is_file():
        raise Http404("no such file in this export")
    return FileResponse(
        open(target, "rb"), as_attachment=Path(path).suffix != ".md", filename=target.name
    )  # noqa: SIM115
