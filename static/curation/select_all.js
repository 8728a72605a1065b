// A "select all" checkbox ([data-select-all]) ticks or clears every checkbox of its table body.
document.addEventListener("change", (event) => {
  const all = event.target.closest?.("[data-select-all]");
  if (!all) return;
  for (const box of all.closest("table").querySelectorAll("tbody input[type=checkbox]")) {
    box.checked = all.checked;
  }
});
