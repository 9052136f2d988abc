// Click a frame to make it full width (its ancestors stay above it as a path); click the root
// to reset. "show every frame" unfolds the library chains; "sort" switches between widest first
// and alphabetical; the search box highlights matching frames and sums their share.
// W (the SVG width) and C (pixels per character) are filled in by flamegraph.py.
(function () {
  var W = __WIDTH__, C = __CHAR_PX__;
  var views = [].slice.call(document.querySelectorAll("g.view"));
  if (!views.length) views = [document.documentElement];  // a graph without the controls (the diff)
  var byName = true, zoomed = null;
  function frames(view) { return [].slice.call(view.querySelectorAll("g.f")); }
  function current() { return views.filter(function (v) { return v.getAttribute("display") !== "none"; })[0]; }
  views.forEach(function (view) {
    frames(view).forEach(function (g) {
      g.dataset.n = g.querySelector("title").textContent.split("\n")[0];
      g.dataset.x0 = g.dataset.x;  // widest first, as drawn
      g.addEventListener("click", function () { zoomed = g; draw(); });
    });
  });
  // Alphabetical order: children of each frame laid out by name from the parent's left edge.
  function layoutByName(view) {
    var gs = frames(view), kids = {};
    gs.forEach(function (g) { (kids[g.dataset.p] = kids[g.dataset.p] || []).push(g); });
    (function place(parent, x) {
      (kids[parent] || []).slice().sort(function (a, b) { return a.dataset.n < b.dataset.n ? -1 : 1; })
        .forEach(function (g) { g.dataset.x = x; place(g.dataset.i, x); x += +g.dataset.w; });
    })("-1", 0);
  }
  function draw() {
    var view = current(), gs = frames(view);
    var z = zoomed && view.contains(zoomed) ? zoomed : gs[0];
    var zx = +z.dataset.x, zw = +z.dataset.w, zd = +z.dataset.d, s = W / zw;
    gs.forEach(function (g) {
      var x = +g.dataset.x, w = +g.dataset.w, d = +g.dataset.d;
      var r = g.querySelector("rect"), t = g.querySelector("text");
      var inside = x >= zx - 1e-6 && x + w <= zx + zw + 1e-6 && d >= zd;
      var ancestor = d < zd && x <= zx + 1e-6 && x + w >= zx + zw - 1e-6;
      if (!(inside || ancestor)) { g.style.display = "none"; return; }
      g.style.display = "";
      var nx = ancestor ? 0 : (x - zx) * s, nw = ancestor ? W : w * s;
      r.setAttribute("x", nx);
      r.setAttribute("width", Math.max(nw - 0.5, 0.5));
      t.setAttribute("x", nx + 3);
      var n = g.dataset.n, c = Math.floor((nw - 6) / C);
      t.textContent = n.length <= c ? n : (c > 3 ? n.slice(0, c - 1) + "\u2026" : "");
    });
    search();
  }
  var fold = document.getElementById("fold");
  if (fold) fold.addEventListener("click", function () {
    var showing = current(), other = views.filter(function (v) { return v !== showing; })[0];
    showing.setAttribute("display", "none");
    other.removeAttribute("display");
    fold.textContent = other.id === "full" ? "fold library frames" : "show every frame";
    zoomed = null; draw();
  });
  var sort = document.getElementById("sort");
  if (sort) sort.addEventListener("click", function () {
    views.forEach(function (view) {
      if (byName) layoutByName(view);
      else frames(view).forEach(function (g) { g.dataset.x = g.dataset.x0; });
    });
    sort.textContent = byName ? "sort: alphabetical" : "sort: widest first";
    byName = !byName; draw();
  });
  var box = document.getElementById("search"), found = document.getElementById("found");
  function search() {
    var q = box ? box.value.trim().toLowerCase() : "", view = current(), total = +frames(view)[0].dataset.w;
    var hit = {}, share = 0;
    frames(view).forEach(function (g) {
      var match = q && g.dataset.n.toLowerCase().indexOf(q) >= 0;
      g.classList.toggle("hit", !!match);
      if (match) hit[g.dataset.i] = g;
    });
    // A frame counts once: not again under a matching ancestor.
    var parentOf = {};
    frames(view).forEach(function (g) { parentOf[g.dataset.i] = g.dataset.p; });
    Object.keys(hit).forEach(function (i) {
      for (var p = parentOf[i]; p !== undefined && p !== "-1"; p = parentOf[p]) if (hit[p]) return;
      share += +hit[i].dataset.w;
    });
    if (found) found.textContent = q ? Object.keys(hit).length + " frames match '" + q + "': " +
      (100 * share / total).toFixed(1) + "% of samples" : "";
  }
  if (box) box.addEventListener("input", search);
})();
