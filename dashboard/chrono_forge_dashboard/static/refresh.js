/* Live refresh (optional): reloads a page every 5 s while its checkbox is
   on; the choice is kept in localStorage.  Every page works without it. */
(function () {
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("live-refresh");
    if (!box) return;
    var keyName = "cf-live-refresh:" + location.pathname;
    box.checked = localStorage.getItem(keyName) === "on";
    var timer = null;
    function arm() {
      if (timer) { clearTimeout(timer); timer = null; }
      if (box.checked) timer = setTimeout(function () { location.reload(); }, 5000);
    }
    box.addEventListener("change", function () {
      localStorage.setItem(keyName, box.checked ? "on" : "off");
      arm();
    });
    arm();
  });
})();
