// Keyboard for review pages: an element with data-key="x" is clicked (or focused, with
// data-key-action="focus") when x is pressed outside a text field; j/k move between the
// links marked data-row in a list. Everything also works without this script.
(() => {
  const typing = (el) =>
    el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));

  const rows = () => Array.from(document.querySelectorAll("a[data-row]"));

  function moveRow(step) {
    const list = rows();
    if (!list.length) return;
    const at = list.indexOf(document.activeElement);
    const next = at < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, at + step));
    list[next].focus();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      moveRow(event.key === "j" ? 1 : -1);
      return;
    }
    const target = document.querySelector(`[data-key="${CSS.escape(event.key)}"]`);
    if (!target) return;
    event.preventDefault();
    if (target.dataset.keyAction === "focus") target.focus();
    else target.click();
  });
})();
