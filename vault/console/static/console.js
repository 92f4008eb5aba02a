// objvault console: table sorting and filtering, copy buttons. Pages work without it.
"use strict";

function cellValue(row, col) {
  const cell = row.children[col];
  const v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
  return v !== "" && !isNaN(v) ? Number(v) : v.toLowerCase();
}

function sortBy(button) {
  const table = button.closest("table");
  const col = Number(button.dataset.sort);
  const up = button.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
  button.closest("th").setAttribute("aria-sort", up ? "ascending" : "descending");
  button.setAttribute("aria-sort", up ? "ascending" : "descending");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a, col), y = cellValue(b, col);
    return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
  });
  rows.forEach((r) => body.appendChild(r));
}

function filterRows(input) {
  const table = document.getElementById(input.dataset.filter);
  const needle = input.value.trim().toLowerCase();
  Array.from(table.tBodies[0].rows).forEach((row) => {
    row.hidden = needle !== "" && !row.children[0].textContent.toLowerCase().includes(needle);
  });
}

async function copy(button) {
  const text = document.getElementById(button.dataset.copy).textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (e) {
    // Without clipboard access (plain HTTP): select the text for Ctrl+C.
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(button.dataset.copy));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-sort], button[data-copy]");
  if (!button) return;
  if (button.dataset.sort !== undefined) sortBy(button);
  else copy(button);
});

document.addEventListener("input", (ev) => {
  if (ev.target.matches("input[data-filter]")) filterRows(ev.target);
});
