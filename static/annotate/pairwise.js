// Pairwise judgment: A | B | tie | both bad, on single keys; Enter submits.

const KEYS = { 1: "A", a: "A", 2: "B", b: "B", 3: "tie", t: "tie", 4: "both_bad", x: "both_bad" };
const SPOKEN = { A: "A is better", B: "B is better", tie: "Tie", both_bad: "Both bad" };

export class PairwiseView {
  constructor(section, { initial } = {}) {
    this.section = section;
    this.buttons = [...section.querySelectorAll("[data-choice]")];
    this.live = section.querySelector("[data-choice-live]");
    this.choice = null;
    for (const b of this.buttons) b.addEventListener("click", () => this.select(b.dataset.choice));
    if (initial && initial.choice) this.select(initial.choice, { quiet: true });
  }

  available(choice) {
    return this.buttons.some((b) => b.dataset.choice === choice);
  }

  select(choice, { quiet = false } = {}) {
    this.choice = choice;
    for (const b of this.buttons) b.setAttribute("aria-pressed", String(b.dataset.choice === choice));
    if (!quiet && this.live) {
      this.live.textContent = choice ? `${SPOKEN[choice]} selected. Press Enter to submit.` : "Choice cleared.";
    }
    this.section.dispatchEvent(new CustomEvent("verdictchange"));
  }

  handleKey(event) {
    if (event.key === "Backspace") {
      this.select(null);
      return true;
    }
    const choice = KEYS[event.key.toLowerCase()];
    if (!choice) return false;
    if (!this.available(choice)) {
      if (this.live) this.live.textContent = "Ties are not allowed in this project.";
      return true;
    }
    this.select(choice);
    return true;
  }

  verdict() {
    if (!this.choice) return { error: "Choose A, B, tie or both bad first." };
    return { choice: this.choice };
  }
}
