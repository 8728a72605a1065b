// The annotation page: mounts the task fragment, routes keys, submits and swaps in the next
// task without a page load. Bound to [data-annotate-root]; no build step.

import { newKey, postJSON } from "./net.js";
import { PairwiseView } from "./pairwise.js";
import { RankingView } from "./ranking.js";
import { VideoSync } from "./videosync.js";
import { ImageZoom } from "./zoom.js";

const RETRYABLE = new Set(["lease_lost", "already_judged", "assignment_closed", "edit_window_closed"]);

class TaskSession {
  constructor(section, page) {
    this.section = section;
    this.page = page;
    this.key = newKey(); // one per task shown: a double click or a retry stores one judgment
    this.busy = false;
    this.hiddenMs = 0;
    this.hiddenSince = null;
    this.started = performance.now();
    this.onVisibility = () => {
      if (document.hidden) this.hiddenSince = performance.now();
      else if (this.hiddenSince != null) {
        this.hiddenMs += performance.now() - this.hiddenSince;
        this.hiddenSince = null;
      }
    };
    document.addEventListener("visibilitychange", this.onVisibility);
    const initialNode = section.querySelector("#initial-verdict");
    const initial = initialNode ? JSON.parse(initialNode.textContent) : null;
    this.video = new VideoSync(section);
    const mode = section.dataset.mode;
    this.view =
      mode === "ranking"
        ? new RankingView(section, { initial })
        : mode === "pairwise"
          ? new PairwiseView(section, { initial })
          : null;
    if (initial && initial.ratings) this.loadRatings(initial.ratings);
    this.errorBox = section.querySelector("[data-error]");
    // A "rank every candidate first" error goes away once the verdict is complete.
    section.addEventListener("verdictchange", () => {
      if (this.view && !this.view.verdict().error) this.showError("");
    });
  }

  durationMs() {
    return Math.max(0, Math.round(performance.now() - this.started - this.hiddenMs));
  }

  loadRatings(ratings) {
    for (const select of this.section.querySelectorAll("select[data-rating]")) {
      const value = ratings?.[select.dataset.dimension]?.[select.dataset.candidateId];
      if (value != null) select.value = String(value);
    }
  }

  ratings() {
    const out = {};
    for (const select of this.section.querySelectorAll("select[data-rating]")) {
      if (!select.value) continue;
      (out[select.dataset.dimension] ||= {})[select.dataset.candidateId] = Number(select.value);
    }
    return out;
  }

  showError(message) {
    if (!this.errorBox) return;
    this.errorBox.textContent = message;
    this.errorBox.hidden = !message;
  }

  async submit() {
    if (!this.view || this.busy) return;
    const verdict = this.view.verdict();
    if (verdict.error) {
      this.showError(verdict.error);
      return;
    }
    this.busy = true;
    this.section.setAttribute("aria-busy", "true");
    const body = {
      ...verdict,
      [this.section.dataset.keyName]: this.key,
      rationale: this.section.querySelector("[data-rationale]")?.value || "",
      ratings: this.ratings(),
      duration_ms: this.durationMs(),
    };
    const { status, data } = await postJSON(this.section.dataset.submitUrl, body, this.page.csrf);
    this.busy = false;
    this.section.removeAttribute("aria-busy");
    if (status === 200 || status === 201) {
      this.page.showSaved(this.section.dataset.keyName === "edit_key" ? "Your change is saved." : "Saved.");
      this.page.load(data.next_url);
    } else if (status === 401) {
      this.page.toLogin();
    } else if (status === 0) {
      this.showError("Network problem: nothing was lost. Press Enter to try again.");
    } else {
      this.showError(data.error || `The server answered ${status}.`);
      if (status === 404 || RETRYABLE.has(data.code)) {
        setTimeout(() => this.page.load(this.section.dataset.nextUrl), 1500);
      }
    }
  }

  async skip() {
    const url = this.section.dataset.skipUrl;
    if (!url || this.busy) return;
    const select = this.section.querySelector("[data-skip-reason]");
    const detail = this.section.querySelector("[data-skip-detail]")?.value.trim() || "";
    let reason = select.value === "other" ? detail : select.value + (detail ? `: ${detail}` : "");
    if (!reason) {
      this.showError("Say why you skip this task.");
      return;
    }
    this.busy = true;
    const { status, data } = await postJSON(url, { reason }, this.page.csrf);
    this.busy = false;
    if (status === 200) this.page.load(data.next_url);
    else if (status === 401) this.page.toLogin();
    else this.showError(data.error || "The task could not be skipped.");
  }

  destroy() {
    this.video.destroy();
    document.removeEventListener("visibilitychange", this.onVisibility);
  }
}

class AnnotationPage {
  constructor(root) {
    this.root = root;
    this.slot = root.querySelector("[data-task-slot]");
    this.csrf = root.dataset.csrf;
    this.session = null;
    document.addEventListener("keydown", (e) => this.onKey(e));
    document.addEventListener("click", (e) => this.onClick(e));
    this.mount({ focus: false });
  }

  mount({ focus = true } = {}) {
    this.session?.destroy();
    const section = this.slot.querySelector("[data-task]");
    this.session = section ? new TaskSession(section, this) : null;
    for (const node of this.slot.querySelectorAll("time[data-local-time]")) {
      const when = new Date(node.getAttribute("datetime"));
      if (!Number.isNaN(when.getTime())) {
        node.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      }
    }
    const title = this.slot.querySelector("[data-task-title]");
    if (title) title.focus({ preventScroll: !focus });
    if (focus) window.scrollTo({ top: 0 });
  }

  async load(url) {
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
    } catch {
      this.session?.showError("Network problem while loading the next task. Press Enter to retry.");
      return;
    }
    if (response.redirected && new URL(response.url).pathname === new URL(this.root.dataset.loginUrl, location.href).pathname) {
      this.toLogin();
      return;
    }
    if (!response.ok && response.status !== 409) {
      // 409: "can no longer be changed", a fragment worth showing; anything else is not one.
      this.session?.showError(`Could not load the next task (the server answered ${response.status}).`);
      return;
    }
    this.slot.innerHTML = await response.text();
    this.mount();
  }

  /** A visible (and announced) confirmation that outlives the swap to the next task. */
  showSaved(text) {
    const note = document.querySelector("[data-saved-note]");
    if (!note) return;
    note.textContent = text;
    clearTimeout(this.savedTimer);
    this.savedTimer = setTimeout(() => {
      note.textContent = "";
    }, 6000);
  }

  toLogin() {
    location.href = `${this.root.dataset.loginUrl}?next=${encodeURIComponent(location.pathname)}`;
  }

  toggleDialog(id) {
    const dialog = document.getElementById(id);
    if (!dialog) return;
    if (dialog.open) dialog.close();
    else dialog.showModal();
  }

  onClick(event) {
    const el = event.target.closest?.(
      "[data-open-dialog], [data-load-next], [data-edit-last], [data-submit], [data-skip], [data-zoom-src], [data-zoom-img]",
    );
    if (!el) return;
    if (el.matches("[data-open-dialog]")) this.toggleDialog(el.dataset.openDialog);
    else if (el.matches("[data-load-next]")) this.load(this.slot.querySelector("[data-task]")?.dataset.nextUrl || this.root.dataset.nextUrl);
    else if (el.matches("[data-edit-last]")) {
      event.preventDefault();
      this.load(el.href);
    } else if (el.matches("[data-submit]")) this.session?.submit();
    else if (el.matches("[data-skip]")) this.session?.skip();
    else if (el.matches("[data-zoom-src]")) this.zoom(el);
    else if (el.matches("[data-zoom-img]")) this.imageZoom?.toggle();
  }

  zoom(opener) {
    this.imageZoom ??= new ImageZoom(document.querySelector("[data-zoom-dialog]"));
    this.imageZoom.open(opener.dataset.zoomSrc, opener.querySelector("img")?.alt || "");
  }

  onKey(event) {
    if (event.defaultPrevented || event.isComposing) return;
    if (document.querySelector("dialog[open]")) {
      if (event.key === "?") this.toggleDialog("help-dialog");
      return; // Esc closes dialogs natively
    }
    const target = event.target instanceof Element ? event.target : document.body;
    const session = this.session;
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      session?.submit();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target.closest("input, textarea, select, [contenteditable]")) return;
    const onControl = Boolean(target.closest("button, a, summary, video, details"));
    if (event.key === "?") {
      event.preventDefault();
      this.toggleDialog("help-dialog");
      return;
    }
    if (event.key === "i") {
      event.preventDefault();
      this.toggleDialog("instructions-dialog");
      return;
    }
    if (!session) return;
    if (event.key === "Enter") {
      if (onControl) return; // a focused button or link answers Enter itself
      event.preventDefault();
      session.submit();
      return;
    }
    if (event.key === " " && onControl) return;
    if (session.video.active && session.video.handleKey(event)) {
      event.preventDefault();
      return;
    }
    if (session.view && session.view.handleKey(event)) event.preventDefault();
  }
}

const root = document.querySelector("[data-annotate-root]");
if (root) {
  window.quorumAnnotation = new AnnotationPage(root);
}
