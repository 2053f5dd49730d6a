// leadline console: keyboard shortcuts and live updates for the inbox.
// Loaded as a file (the Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  const inbox = document.querySelector("[data-inbox]");
  if (!inbox) return;

  // Keyboard: j/k move between cards, a approves, s sends, r focuses the
  // rejection reason. Never while typing in a field.
  let current = 0;
  const cards = () => Array.from(inbox.querySelectorAll(".card:not(.stale)"));
  function select(i) {
    const all = cards();
    if (all.length === 0) return;
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach((c, n) => c.classList.toggle("current", n === current));
    all[current].scrollIntoView({ block: "nearest" });
  }
  function press(selector) {
    const card = cards()[current];
    const target = card && card.querySelector(selector);
    if (target) target.click();
  }
  document.addEventListener("keydown", (event) => {
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.metaKey || event.ctrlKey || event.altKey) return;
    switch (event.key) {
      case "j": select(current + 1); break;
      case "k": select(current - 1); break;
      case "a": press("[data-action=approve]"); break;
      case "s": press("[data-action=send]"); break;
      case "r": {
        const card = cards()[current];
        const reason = card && card.querySelector("input[name=reason]");
        if (reason) { event.preventDefault(); reason.focus(); }
        break;
      }
      default: return;
    }
  });
  select(0);

  // Live: every few seconds ask which approvals still wait. A card another
  // person decided is marked and its buttons disabled, so nobody acts on a
  // stale card; new ones are announced.
  const status = document.getElementById("live");
  async function refresh() {
    try {
      const response = await fetch("/inbox/state", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.status === 401 || response.redirected) { window.location.assign("/login"); return; }
      if (!response.ok) return;
      const state = await response.json();
      const open = new Map(state.items.map((item) => [item.id, item]));
      let gone = 0;
      inbox.querySelectorAll(".card").forEach((card) => {
        const item = open.get(card.dataset.approval);
        const shown = card.dataset.status;
        const edited = item && String(item.revision) !== card.dataset.revision;
        if (!item || item.status !== shown || edited) {
          if (!card.classList.contains("stale")) {
            card.classList.add("stale");
            // Buttons and fields, not the hidden CSRF token: a form
            // submitted anyway must still say who sends it.
            card.querySelectorAll("button, textarea, input:not([type=hidden])").forEach((el) => { el.disabled = true; });
            const note = card.querySelector("[data-note]");
            if (note) {
              note.textContent = !item ? "Decided by someone else; reload to see the outcome."
                : item.status !== shown ? "Now " + item.status + " (changed by someone else)."
                : "The draft was edited by someone else; reload to read the new text.";
            }
          }
          gone += 1;
        }
      });
      const shownIds = new Set(Array.from(inbox.querySelectorAll(".card")).map((c) => c.dataset.approval));
      const fresh = state.items.filter((item) => !shownIds.has(item.id)).length;
      if (status) {
        const parts = [];
        if (fresh > 0) parts.push(fresh + " new");
        if (gone > 0) parts.push(gone + " changed by others");
        status.textContent = parts.length ? parts.join(", ") + " — reload to update." : "";
      }
    } catch (_) { /* offline for a moment: try again next time */ }
  }
  setInterval(refresh, 2000);
})();
