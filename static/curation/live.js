// Live progress without a reload: an element marked data-live-region="name" is fetched again
// from the same URL every 2 s and swapped for its fresh copy, for as long as it holds an
// element marked data-live (a pending or running job). Keyboard focus survives the swap when
// the focused element has an id or an aria-label. Without this script the page still works.
(() => {
  const INTERVAL_MS = 2000;

  function focusKey(region) {
    const el = document.activeElement;
    if (!el || !region.contains(el)) return null;
    if (el.id) return `#${CSS.escape(el.id)}`;
    const label = el.getAttribute("aria-label");
    return label ? `[aria-label="${CSS.escape(label)}"]` : null;
  }

  async function refresh() {
    const live = Array.from(document.querySelectorAll("[data-live-region]")).filter((r) =>
      r.querySelector("[data-live]"),
    );
    if (!live.length) return;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const region of live) {
          const name = CSS.escape(region.dataset.liveRegion);
          const next = fresh.querySelector(`[data-live-region="${name}"]`);
          if (!next) continue;
          const key = focusKey(region);
          const adopted = document.importNode(next, true);
          region.replaceWith(adopted);
          if (key) adopted.querySelector(key)?.focus();
        }
      }
    } catch (error) {
      // Offline or the server restarting: try again on the next tick.
    }
    window.setTimeout(refresh, INTERVAL_MS);
  }

  window.setTimeout(refresh, INTERVAL_MS);
})();
