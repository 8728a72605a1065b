// Media on review pages, as on the annotator page: candidate videos play together from one set
// of controls (annotate/videosync.js: Space, arrows, 0, -/+ for speed, l for loop) and images
// open enlarged in a dialog on click (click again for twice that). Bound to
// [data-media-section], [data-zoom-src] and [data-zoom-dialog].
import { VideoSync } from "../annotate/videosync.js";

const section = document.querySelector("[data-media-section]");
const sync = section ? new VideoSync(section) : null;
const dialog = document.querySelector("[data-zoom-dialog]");
const zoomImg = dialog?.querySelector("[data-zoom-img]");

/** Sizes the zoomed image to fill the window (small images are enlarged, not shown smaller). */
function fit(double) {
  if (!zoomImg.naturalWidth) return;
  const scale = Math.min(
    (window.innerWidth * 0.9) / zoomImg.naturalWidth,
    (window.innerHeight * 0.8) / zoomImg.naturalHeight,
  );
  zoomImg.style.width = `${Math.round(zoomImg.naturalWidth * scale * (double ? 2 : 1))}px`;
  zoomImg.classList.toggle("upscaled", scale > 1);
  zoomImg.classList.toggle("zoomed", double);
}

if (dialog) {
  zoomImg.addEventListener("load", () => fit(false));
  document.addEventListener("click", (event) => {
    const opener = event.target.closest?.("[data-zoom-src]");
    if (opener) {
      zoomImg.alt = opener.querySelector("img")?.alt || "";
      zoomImg.src = opener.dataset.zoomSrc;
      dialog.showModal();
      fit(false);
    } else if (event.target === zoomImg) {
      fit(!zoomImg.classList.contains("zoomed"));
    }
  });
}

document.addEventListener("keydown", (event) => {
  if (!sync?.active || event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  if (document.querySelector("dialog[open]")) return;
  const target = event.target instanceof Element ? event.target : document.body;
  if (target.closest("input, textarea, select, [contenteditable]")) return;
  // A focused button, link or video answers Space and the arrows itself.
  const onControl = Boolean(target.closest("button, a, summary, video"));
  if (onControl && (event.key === " " || event.key.startsWith("Arrow"))) return;
  if (sync.handleKey(event)) event.preventDefault();
});
