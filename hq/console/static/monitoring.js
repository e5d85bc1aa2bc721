// Refresh the centers table every minute without reloading the page.
(function () {
  "use strict";
  var box = document.getElementById("monitoring");
  if (!box) { return; }
  function refresh() {
    fetch(box.dataset.src, {credentials: "same-origin", redirect: "error"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) { box.innerHTML = html; })
      .catch(function () { /* keep the last table; the next tick tries again */ });
  }
  setInterval(refresh, 60000);
})();
