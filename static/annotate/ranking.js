// N-way ranking: state (tie groups of candidate ids, best first), keyboard, drag and drop.

const ORDINALS = ["1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th"];

export class RankingState {
  constructor(ids, { tiesAllowed = true } = {}) {
    this.ids = ids;
    this.tiesAllowed = tiesAllowed;
    this.groups = [];
    this.history = [];
  }

  rankOf(id) {
    return this.groups.findIndex((g) => g.includes(id));
  }

  get placed() {
    return this.groups.reduce((n, g) => n + g.length, 0);
  }

  get complete() {
    return this.placed === this.ids.length;
  }

  load(groups) {
    const known = new Set(this.ids);
    this.groups = (groups || [])
      .map((g) => (Array.isArray(g) ? g : [g]).filter((id) => known.has(id)))
      .filter((g) => g.length);
    this.history = [];
  }

  _save() {
    this.history.push(this.groups.map((g) => g.slice()));
  }

  _without(id) {
    return this.groups.map((g) => g.filter((x) => x !== id)).filter((g) => g.length);
  }

  /** Ranks `id` next (a new place), or ties it with the last place. */
  place(id, { tie = false } = {}) {
    if (this.rankOf(id) !== -1) return false;
    this._save();
    if (tie && this.tiesAllowed && this.groups.length) this.groups[this.groups.length - 1].push(id);
    else this.groups.push([id]);
    return true;
  }

  /** Moves `id` into the place that holds `targetId` (a tie). */
  tieWith(id, targetId) {
    if (id === targetId || !this.tiesAllowed) return false;
    this._save();
    const groups = this._without(id);
    const group = groups.find((g) => g.includes(targetId));
    if (!group) return false;
    group.push(id);
    this.groups = groups;
    return true;
  }

  /** Moves `id` to a new place before the place that now holds `beforeId` (null: the end). */
  insertBefore(id, beforeId) {
    this._save();
    const groups = this._without(id);
    const index = beforeId == null ? -1 : groups.findIndex((g) => g.includes(beforeId));
    if (index === -1) groups.push([id]);
    else groups.splice(index, 0, [id]);
    this.groups = groups;
    return true;
  }

  unrank(id) {
    if (this.rankOf(id) === -1) return false;
    this._save();
    this.groups = this._without(id);
    return true;
  }

  clear() {
    if (!this.groups.length) return false;
    this._save();
    this.groups = [];
    return true;
  }

  undo() {
    if (!this.history.length) return false;
    this.groups = this.history.pop();
    return true;
  }
}

export class RankingView {
  constructor(section, { initial } = {}) {
    this.section = section;
    this.list = section.querySelector("[data-rank-list]");
    this.live = section.querySelector("[data-rank-live]");
    this.hint = section.querySelector("[data-rank-hint]");
    this.cards = new Map();
    this.letterOf = new Map();
    this.idOfLetter = new Map();
    for (const card of section.querySelectorAll("[data-candidate]")) {
      const id = Number(card.dataset.candidateId);
      this.cards.set(id, card);
      this.letterOf.set(id, card.dataset.letter);
      this.idOfLetter.set(card.dataset.letter, id);
    }
    this.state = new RankingState([...this.cards.keys()], {
      tiesAllowed: section.dataset.tiesAllowed === "true",
    });
    if (initial && initial.ranking) this.state.load(initial.ranking);
    // The buttons give focus back after a click: a focused button would take the next Enter
    // (clearing or undoing again) instead of the page submitting the ranking.
    section.querySelector("[data-undo]")?.addEventListener("click", (e) => {
      e.currentTarget.blur();
      this.apply(this.state.undo(), "Undone.");
    });
    section.querySelector("[data-clear]")?.addEventListener("click", (e) => {
      e.currentTarget.blur();
      this.apply(this.state.clear(), "Ranking cleared.");
    });
    this.bindDragAndDrop();
    this.render();
  }

  describe() {
    if (!this.state.groups.length) return "Nothing ranked yet.";
    const places = this.state.groups.map(
      (g, i) => `${i + 1}: ${g.map((id) => this.letterOf.get(id)).join(" tied with ")}`,
    );
    const left = this.state.ids.length - this.state.placed;
    return `Ranking ${places.join(", ")}.` + (left ? ` ${left} left.` : " Complete: press Enter to submit.");
  }

  apply(changed, message) {
    if (!changed) return;
    this.render();
    this.announce(`${message} ${this.describe()}`);
    this.section.dispatchEvent(new CustomEvent("verdictchange"));
  }

  announce(text) {
    if (!this.live) return;
    // Clearing first makes screen readers repeat an identical message.
    this.live.textContent = "";
    requestAnimationFrame(() => {
      this.live.textContent = text;
    });
  }

  /** Keyboard: letters rank best to worst, Shift+letter ties, Backspace undoes. */
  handleKey(event) {
    if (event.key === "Backspace") {
      this.apply(this.state.undo(), "Undone.");
      return true;
    }
    const match = /^Key([A-H])$/.exec(event.code || "");
    if (!match || !this.idOfLetter.has(match[1])) return false;
    const id = this.idOfLetter.get(match[1]);
    const tie = event.shiftKey && this.state.groups.length > 0;
    if (this.state.rankOf(id) !== -1) {
      this.announce(`${match[1]} is already ranked ${ORDINALS[this.state.rankOf(id)]}. Backspace undoes.`);
      return true;
    }
    if (tie && !this.state.tiesAllowed) {
      this.announce("Ties are not allowed in this project.");
      return true;
    }
    const changed = this.state.place(id, { tie });
    const rank = ORDINALS[this.state.rankOf(id)];
    this.apply(changed, tie ? `${match[1]} tied ${rank}.` : `${match[1]} ranked ${rank}.`);
    return true;
  }

  verdict() {
    if (!this.state.complete) {
      const left = this.state.ids.length - this.state.placed;
      return { error: `Rank every candidate first (${left} left).` };
    }
    return { ranking: this.state.groups.map((g) => g.slice()) };
  }

  render() {
    const groups = this.state.groups;
    const items = [];
    const gap = (beforeGroup, end) => {
      const li = document.createElement("li");
      li.className = "rank-gap" + (end ? " rank-gap-end" : "");
      li.dataset.beforeGroup = beforeGroup == null ? "" : String(beforeGroup);
      if (end) li.dataset.gapEnd = "";
      li.setAttribute("aria-hidden", "true");
      if (end) li.textContent = groups.length ? "drop here for the next place" : "drop candidates here, best first";
      return li;
    };
    groups.forEach((group, i) => {
      items.push(gap(i, false));
      const li = document.createElement("li");
      li.className = "rank-group";
      li.dataset.group = String(i);
      const no = document.createElement("span");
      no.className = "rank-no";
      no.textContent = String(i + 1);
      li.append(no);
      group.forEach((id, j) => {
        if (j) {
          const eq = document.createElement("span");
          eq.className = "tie-mark";
          eq.textContent = "=";
          eq.setAttribute("aria-label", "tied with");
          li.append(eq);
        }
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.draggable = true;
        chip.dataset.dragId = String(id);
        chip.textContent = this.letterOf.get(id);
        li.append(chip);
      });
      items.push(li);
    });
    items.push(gap(null, true));
    this.list.replaceChildren(...items);
    for (const [id, card] of this.cards) {
      const rank = this.state.rankOf(id);
      const badge = card.querySelector("[data-rank-badge]");
      card.classList.toggle("ranked", rank !== -1);
      card.dataset.rank = rank === -1 ? "" : String(rank + 1);
      if (badge) {
        const tied = rank !== -1 && groups[rank].length > 1;
        badge.textContent = rank === -1 ? "not ranked" : `${tied ? "tied " : ""}${ORDINALS[rank]}`;
      }
    }
    this.section.classList.toggle("complete", this.state.complete);
  }

  bindDragAndDrop() {
    const target = (el) => el.closest(".rank-group, .rank-gap, [data-pool]");
    let over = null;
    const highlight = (el) => {
      if (over === el) return;
      over?.classList.remove("drop-over");
      over = el;
      over?.classList.add("drop-over");
    };
    this.section.addEventListener("dragstart", (e) => {
      const handle = e.target.closest?.("[data-drag-id]");
      if (!handle) return;
      e.dataTransfer.setData("text/plain", handle.dataset.dragId);
      e.dataTransfer.effectAllowed = "move";
      this.dragging = Number(handle.dataset.dragId);
    });
    this.section.addEventListener("dragover", (e) => {
      const t = target(e.target);
      if (!t || this.dragging == null) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "move";
      highlight(t);
    });
    this.section.addEventListener("dragend", () => {
      highlight(null);
      this.dragging = null;
    });
    this.section.addEventListener("drop", (e) => {
      const t = target(e.target);
      if (!t) return;
      e.preventDefault();
      highlight(null);
      const id = Number(e.dataTransfer.getData("text/plain")) || this.dragging;
      this.dragging = null;
      if (!this.cards.has(id)) return;
      const letter = this.letterOf.get(id);
      if (t.matches(".rank-group")) {
        const other = this.state.groups[Number(t.dataset.group)]?.find((x) => x !== id);
        if (other == null) return;
        if (this.state.tiesAllowed) {
          this.apply(this.state.tieWith(id, other), `${letter} tied with ${this.letterOf.get(other)}.`);
        } else {
          const next = this.state.groups[Number(t.dataset.group) + 1];
          this.apply(this.state.insertBefore(id, next ? next[0] : null), `${letter} moved.`);
        }
      } else if (t.matches(".rank-gap")) {
        const group = t.dataset.beforeGroup ? this.state.groups[Number(t.dataset.beforeGroup)] : null;
        const before = group ? group.find((x) => x !== id) : null;
        if (group && before == null) return; // dropped just before itself
        this.apply(this.state.insertBefore(id, before ?? null), `${letter} placed.`);
      } else {
        this.apply(this.state.unrank(id), `${letter} removed from the ranking.`);
      }
    });
  }
}
