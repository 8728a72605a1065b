// Media on review pages, as on the annotator page: candidate videos play together from one set
// of controls (annotate/videosync.js: Space, arrows, 0, -/+ for speed, l for loop) and images
// open enlarged in a dialog on click (click again for twice that). Bound to
// [data-media-section], [data-zoom-src] and [data-zoom-dialog].
import { VideoSync } from "../annotate/videosync.js";
import { ImageZoom } from "../annotate/zoom.js";

const section = document.querySelector("[data-media-section]");
const sync = section ? new VideoSync(section) : null;
const dialog = document.querySelector("[data-zoom-dialog]");

if (dialog) {
  const zoom = new ImageZoom(dialog);
  document.addEventListener("click", (event) => {
    const opener = event.target.closest?.("[data-zoom-src]");
    if (opener) zoom.open(opener.dataset.zoomSrc, opener.querySelector("img")?.alt || "");
    else if (event.target === zoom.img) zoom.toggle();
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
