/* Khidmat Edge staff UI: the little JavaScript the screens need, served locally.
   Idle logout with a warning, live fragments over server-sent events, the board's
   chime (WebAudio, no file), kiosk self-reset, print button, no double submits. */
(function () {
  "use strict";

  var PING_EVERY_MS = 60000;

  function idleTimer() {
    var body = document.body;
    var idle = parseInt(body.getAttribute("data-idle-seconds") || "0", 10);
    var box = document.getElementById("idle-warning");
    if (!idle || !box) { return; }
    var warn = Math.min(60, Math.floor(idle / 2));
    var csrf = document.getElementById("csrf");
    var count = document.getElementById("idle-count");
    var last = Date.now();
    var lastPing = Date.now();
    function ping() {
      lastPing = Date.now();
      fetch(csrf.getAttribute("data-ping"), {
        method: "POST", credentials: "same-origin",
        headers: {"X-CSRF-Token": csrf.getAttribute("data-token")}
      }).then(function (r) { if (r.status === 401) { window.location.reload(); } })
        .catch(function () { /* offline LAN hiccup: the next activity pings again */ });
    }
    function active() {
      var wasWarned = !box.hidden;
      last = Date.now();
      box.hidden = true;
      if (wasWarned || Date.now() - lastPing > PING_EVERY_MS) { ping(); }
    }
    ["keydown", "pointerdown", "input"].forEach(function (name) {
      document.addEventListener(name, active, true);
    });
    document.getElementById("idle-stay").addEventListener("click", active);
    setInterval(function () {
      var left = idle - Math.floor((Date.now() - last) / 1000);
      if (left <= 0) {
        document.getElementById("idle-logout").submit();
      } else if (left <= warn) {
        count.textContent = left + " s";
        if (box.hidden) { box.hidden = false; document.getElementById("idle-stay").focus(); }
      }
    }, 1000);
  }

  var audio = null;
  function chime() {
    var Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) { return; }
    audio = audio || new Ctx();
    if (audio.state === "suspended") { audio.resume(); }
    [660, 880].forEach(function (freq, i) {
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      var at = audio.currentTime + i * 0.35;
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.4, at + 0.03);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.6);
      osc.connect(gain).connect(audio.destination);
      osc.start(at);
      osc.stop(at + 0.65);
    });
    var body = document.body;
    body.setAttribute("data-chimes", String(parseInt(body.getAttribute("data-chimes") || "0", 10) + 1));
  }

  function latestKey(el) {
    var node = el.querySelector("[data-latest]");
    return node ? node.getAttribute("data-latest") : "";
  }

  function liveRegions() {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      if (!window.EventSource) { return; }
      var seen = latestKey(el);
      var source = new EventSource(el.getAttribute("data-live"));
      source.addEventListener("update", function (event) {
        el.innerHTML = event.data;
        document.body.setAttribute("data-live-updates",
          String(parseInt(document.body.getAttribute("data-live-updates") || "0", 10) + 1));
        if (el.hasAttribute("data-chime")) {
          var key = latestKey(el);
          if (key && key !== seen) { chime(); }
          seen = key;
        }
      });
      source.addEventListener("error", function () {
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(function () { window.location.reload(); }, 5000);
        }
      });
    });
    var sound = document.getElementById("sound-on");
    if (sound) {
      sound.addEventListener("click", function () {
        chime();
        sound.setAttribute("aria-pressed", "true");
      });
    }
  }

  function selfReset() {
    document.querySelectorAll("[data-reset-after]").forEach(function (el) {
      var after = parseInt(el.getAttribute("data-reset-after"), 10) * 1000;
      var url = el.getAttribute("data-reset-url");
      var timer = null;
      function arm() {
        clearTimeout(timer);
        timer = setTimeout(function () { window.location.assign(url); }, after);
      }
      ["keydown", "pointerdown", "input"].forEach(function (name) {
        document.addEventListener(name, arm, true);
      });
      arm();
    });
  }

  function printButtons() {
    document.querySelectorAll("[data-print]").forEach(function (button) {
      button.addEventListener("click", function () { window.print(); });
    });
  }

  function oneSubmit() {
    document.querySelectorAll("form[method='post']").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.getAttribute("data-sent")) { event.preventDefault(); return; }
        form.setAttribute("data-sent", "1");
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    idleTimer();
    liveRegions();
    selfReset();
    printButtons();
    oneSubmit();
  });
}());
