// Click a frame to make it full width (its ancestors stay above it as a path); click the root
// to reset. W (the SVG width) and C (pixels per character) are filled in by flamegraph.py.
(function () {
  var W = __WIDTH__, C = __CHAR_PX__;
  var gs = [].slice.call(document.querySelectorAll("g.f"));
  gs.forEach(function (g) {
    g.dataset.n = g.querySelector("title").textContent.split("\n")[0];
    g.addEventListener("click", function () { zoom(g); });
  });
  function zoom(z) {
    var zx = +z.dataset.x, zw = +z.dataset.w, zd = +z.dataset.d, s = W / zw;
    gs.forEach(function (g) {
      var x = +g.dataset.x, w = +g.dataset.w, d = +g.dataset.d;
      var r = g.querySelector("rect"), t = g.querySelector("text");
      var inside = x >= zx - 1e-6 && x + w <= zx + zw + 1e-6;
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
  }
})();
