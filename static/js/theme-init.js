// Runs before first paint: apply the reader's saved theme so the page never flashes.
(function () {
  try {
    var saved = localStorage.getItem("loralab-theme");
    document.documentElement.dataset.theme = saved === "light" || saved === "dark" ? saved : "auto";
  } catch (e) { /* storage disabled: follow the system */ }
})();
