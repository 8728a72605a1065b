// Project settings page: rubric rows are added and removed in place. Without this script the
// same buttons submit the form and the server re-renders the rows.
(() => {
  const form = document.querySelector("[data-setup-settings]");
  if (!form) return;
  const list = form.querySelector("[data-rubric-rows]");

  function renumber() {
    list.querySelectorAll("[data-rubric-row]").forEach((row, i) => {
      row.querySelector("input").setAttribute("aria-label", `Rubric dimension ${i + 1}`);
      const remove = row.querySelector("[data-remove-row]");
      remove.value = String(i);
      remove.setAttribute("aria-label", `Remove rubric dimension ${i + 1}`);
    });
  }

  form.addEventListener("click", (event) => {
    const add = event.target.closest("[data-add-row]");
    const remove = event.target.closest("[data-remove-row]");
    if (add) {
      event.preventDefault();
      const rows = list.querySelectorAll("[data-rubric-row]");
      const row = rows[rows.length - 1].cloneNode(true);
      row.querySelector("input").value = "";
      list.appendChild(row);
      renumber();
      row.querySelector("input").focus();
    } else if (remove) {
      event.preventDefault();
      const row = remove.closest("[data-rubric-row]");
      const next = row.nextElementSibling || row.previousElementSibling;
      if (list.querySelectorAll("[data-rubric-row]").length === 1) {
        row.querySelector("input").value = "";
      } else {
        row.remove();
      }
      renumber();
      (next || list.querySelector("[data-rubric-row]")).querySelector("input").focus();
    }
  });

  // Enter in a rubric row adds the next row instead of submitting the whole form.
  list.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches("input")) {
      event.preventDefault();
      form.querySelector("[data-add-row]").click();
    }
  });
})();
