// Synchronised playback: one set of controls plays, pauses, seeks, sets the speed and loops
// every candidate video together. Each video keeps its own native controls; a video paused
// by hand is left alone until the shared controls are used again.

const RATES = [0.25, 0.5, 1, 1.5, 2];
const MAX_DRIFT_S = 0.1;

export class VideoSync {
  constructor(section) {
    this.bar = section.querySelector("[data-video-sync]");
    this.videos = [...section.querySelectorAll("video[data-sync]")];
    this.active = Boolean(this.bar && this.videos.length);
    this.playing = false;
    this.frame = 0;
    if (!this.active) return;
    this.playButton = this.bar.querySelector("[data-sync-play]");
    this.playLabel = this.bar.querySelector("[data-sync-play-label]");
    this.seekInput = this.bar.querySelector("[data-sync-seek]");
    this.timeOutput = this.bar.querySelector("[data-sync-time]");
    this.rateSelect = this.bar.querySelector("[data-sync-rate]");
    this.loopBox = this.bar.querySelector("[data-sync-loop]");
    this.playButton.addEventListener("click", () => this.toggle());
    this.bar.querySelector("[data-sync-restart]")?.addEventListener("click", () => this.seek(0));
    this.seekInput.addEventListener("input", () => this.seek(Number(this.seekInput.value)));
    this.rateSelect.addEventListener("change", () => this.setRate(Number(this.rateSelect.value)));
    this.loopBox.addEventListener("change", () => this.setLoop(this.loopBox.checked));
    for (const v of this.videos) {
      v.loop = this.loopBox.checked;
      v.addEventListener("loadedmetadata", () => this.updateRange());
      v.addEventListener("timeupdate", () => v === this.leader && this.showTime());
      v.addEventListener("ended", () => v === this.leader && !v.loop && this.pause());
    }
    this.updateRange();
  }

  /** The longest video sets the shared clock. */
  get leader() {
    return this.videos.reduce((a, b) => ((b.duration || 0) > (a.duration || 0) ? b : a));
  }

  targetFor(video, t) {
    const d = video.duration;
    if (!Number.isFinite(d) || d <= 0) return t;
    return video.loop ? t % d : Math.min(t, d);
  }

  updateRange() {
    const d = this.leader.duration;
    if (Number.isFinite(d) && d > 0) this.seekInput.max = String(d);
  }

  showTime() {
    const t = this.leader.currentTime;
    this.seekInput.value = String(t);
    this.timeOutput.textContent = `${t.toFixed(2)} s`;
  }

  setState(playing) {
    this.playing = playing;
    this.bar.dataset.syncState = playing ? "playing" : "paused";
    this.playButton.setAttribute("aria-pressed", String(playing));
    this.playLabel.textContent = playing ? "Pause all" : "Play all";
  }

  async play() {
    const t = this.leader.currentTime;
    for (const v of this.videos) {
      if (v !== this.leader) v.currentTime = this.targetFor(v, t);
    }
    this.setState(true);
    // Muted videos may autoplay; a rejected play() (not loaded yet) is retried by the drift loop.
    await Promise.all(this.videos.map((v) => v.play().catch(() => {})));
    cancelAnimationFrame(this.frame);
    this.frame = requestAnimationFrame(() => this.tick());
  }

  pause() {
    for (const v of this.videos) v.pause();
    this.setState(false);
    cancelAnimationFrame(this.frame);
    this.seek(this.leader.currentTime);
  }

  toggle() {
    if (this.playing) this.pause();
    else this.play();
  }

  seek(t) {
    const d = this.leader.duration;
    const clamped = Math.max(0, Number.isFinite(d) ? Math.min(t, d) : t);
    for (const v of this.videos) v.currentTime = this.targetFor(v, clamped);
    this.seekInput.value = String(clamped);
    this.timeOutput.textContent = `${clamped.toFixed(2)} s`;
  }

  nudge(seconds) {
    this.seek(this.leader.currentTime + seconds);
  }

  setRate(rate) {
    for (const v of this.videos) v.playbackRate = rate;
    this.rateSelect.value = String(rate);
  }

  stepRate(direction) {
    const i = RATES.indexOf(Number(this.rateSelect.value));
    const next = RATES[Math.max(0, Math.min(RATES.length - 1, (i === -1 ? 2 : i) + direction))];
    this.setRate(next);
  }

  setLoop(loop) {
    for (const v of this.videos) v.loop = loop;
    this.loopBox.checked = loop;
  }

  tick() {
    if (!this.playing) return;
    const leader = this.leader;
    const t = leader.currentTime;
    for (const v of this.videos) {
      if (v === leader || v.paused || v.seeking) continue;
      const target = this.targetFor(v, t);
      if (Math.abs(v.currentTime - target) > MAX_DRIFT_S) v.currentTime = target;
    }
    this.showTime();
    this.frame = requestAnimationFrame(() => this.tick());
  }

  /** Shared-control keys; returns true when the key was used. */
  handleKey(event) {
    switch (event.key) {
      case " ":
        this.toggle();
        return true;
      case "ArrowLeft":
        this.nudge(event.shiftKey ? -0.1 : -1);
        return true;
      case "ArrowRight":
        this.nudge(event.shiftKey ? 0.1 : 1);
        return true;
      case "0":
      case "Home":
        this.seek(0);
        return true;
      case "-":
        this.stepRate(-1);
        return true;
      case "=":
      case "+":
        this.stepRate(1);
        return true;
      case "l":
        this.setLoop(!this.loopBox.checked);
        return true;
      default:
        return false;
    }
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.playing = false;
    for (const v of this.videos) v.pause();
  }
}
