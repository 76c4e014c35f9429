// equipath view: the slide as DeepZoom tiles (OpenSeadragon) with equipath's overlays.
// Image layers (heatmap, tissue) are tiled images placed in level-0 pixels; GeoJSON layers (regions,
// detections, cell points) are drawn in an SVG whose transform follows the viewport.
"use strict";
(async function () {
  const SVG = "http://www.w3.org/2000/svg";
  const runs = await (await fetch("/api/runs.json")).json();
  const viewer = OpenSeadragon({
    id: "viewer", prefixUrl: "/static/openseadragon/images/", drawer: "canvas",
    imageSmoothingEnabled: false, showNavigator: true, navigatorPosition: "BOTTOM_RIGHT",
    maxZoomPixelRatio: 4, animationTime: 0.3,
  });
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("style", "position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none");
  const root = document.createElementNS(SVG, "g");
  svg.appendChild(root);
  viewer.canvas.appendChild(svg);
  let current = null;

  function follow() {  // level-0 pixel -> screen pixel, for the SVG layers
    if (!current) return;
    const p0 = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(0, 0), true);
    const p1 = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(1, 0), true);
    const scale = (p1.x - p0.x) / current.slide.width;
    root.setAttribute("transform", `translate(${p0.x},${p0.y}) scale(${scale})`);
  }
  for (const event of ["animation", "update-viewport", "resize", "open"]) viewer.addHandler(event, follow);

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.assign(node, attrs || {});
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ringPath(ring) {
    return "M" + ring.map((p) => `${p[0]},${p[1]}`).join("L") + "Z";
  }

  function drawGeojson(layer, data, group) {
    const pointRadius = layer.radius_level0 || (current.slide.mpp ? 4 / current.slide.mpp : 8);
    for (const feature of data.features) {
      const geometry = feature.geometry || {};
      const colour = (feature.properties || {})._colour || "#0050ff";
      const polygons = geometry.type === "Polygon" ? [geometry.coordinates]
        : geometry.type === "MultiPolygon" ? geometry.coordinates : [];
      for (const polygon of polygons) {
        const path = document.createElementNS(SVG, "path");
        path.setAttribute("d", polygon.map(ringPath).join(""));
        path.setAttribute("fill-rule", "evenodd");
        path.setAttribute("style", `fill:${colour};fill-opacity:0.15;stroke:${colour};stroke-width:2;` +
          "vector-effect:non-scaling-stroke");
        group.appendChild(path);
      }
      const points = geometry.type === "Point" ? [geometry.coordinates]
        : geometry.type === "MultiPoint" ? geometry.coordinates : [];
      for (const p of points) {
        const circle = document.createElementNS(SVG, "circle");
        circle.setAttribute("cx", p[0]);
        circle.setAttribute("cy", p[1]);
        circle.setAttribute("r", pointRadius);
        circle.setAttribute("style", `fill:${colour};fill-opacity:0.35;stroke:${colour};stroke-width:2;` +
          "vector-effect:non-scaling-stroke");
        group.appendChild(circle);
      }
    }
  }

  function legend(layer) {
    const box = el("div");
    const spec = layer.legend || {};
    if (spec.colorbar) {
      const bar = el("div", {className: "colorbar"});
      bar.style.background = `linear-gradient(to right, ${spec.colorbar.join(",")})`;
      box.appendChild(bar);
      const ticks = el("div", {className: "ticks"});
      for (const t of [spec.min, (spec.min + spec.max) / 2, spec.max]) ticks.appendChild(el("span", {}, String(t)));
      box.appendChild(ticks);
    }
    for (const [name, colour] of spec.swatches || []) {
      const row = el("div");
      const swatch = el("span", {className: "swatch"});
      swatch.style.background = colour;
      row.append(swatch, name);
      box.appendChild(row);
    }
    if (spec.note) box.appendChild(el("div", {className: "note"}, spec.note));
    return box;
  }

  function control(layer, apply) {
    const box = el("div", {className: "layer"});
    const toggle = el("input", {type: "checkbox", checked: layer.visible, id: `layer-${layer.id}`});
    const label = el("label", {htmlFor: toggle.id},
      " " + layer.title + (layer.count !== undefined ? ` (${layer.count})` : ""));
    const slider = el("input", {type: "range", min: 0, max: 1, step: 0.05, value: layer.opacity,
      id: `opacity-${layer.id}`, title: "opacity"});
    const update = () => apply(toggle.checked ? Number(slider.value) : 0);
    toggle.addEventListener("change", update);
    slider.addEventListener("input", update);
    box.append(toggle, label, slider, legend(layer));
    update();
    return box;
  }

  function addLayers(run) {
    const panel = document.getElementById("layers");
    panel.replaceChildren();
    root.replaceChildren();
    for (const layer of run.layers) {
      if (layer.kind === "image") {
        let item = null, wanted = layer.visible ? layer.opacity : 0;
        viewer.addTiledImage({
          tileSource: {type: "image", url: layer.url, buildPyramid: false},
          x: 0, y: 0, width: layer.width_level0 / run.slide.width, opacity: wanted,
          success: (event) => {
            item = event.item;
            const size = item.getContentSize();  // clip the last cells to the slide
            item.setClip(new OpenSeadragon.Rect(0, 0, size.x * run.slide.width / layer.width_level0,
              size.y * run.slide.height / layer.height_level0));
            item.setOpacity(wanted);
            viewer.raiseEvent("equipath-layer", {id: layer.id});
          },
        });
        panel.appendChild(control(layer, (opacity) => { wanted = opacity; if (item) item.setOpacity(opacity); }));
      } else {
        const group = document.createElementNS(SVG, "g");
        root.appendChild(group);
        fetch(layer.url).then((r) => r.json()).then((data) => {
          drawGeojson(layer, data, group);
          viewer.raiseEvent("equipath-layer", {id: layer.id});
        });
        panel.appendChild(control(layer, (opacity) => { group.setAttribute("opacity", opacity); }));
      }
    }
  }

  function fill(table, rows) {
    table.replaceChildren();
    for (const [key, value] of rows) {
      if (value === undefined || value === null) continue;
      const tr = el("tr");
      tr.append(el("td", {}, key), el("td", {}, typeof value === "object" ? JSON.stringify(value) : String(value)));
      table.appendChild(tr);
    }
  }

  function flatten(object, prefix, out) {
    for (const [key, value] of Object.entries(object || {})) {
      if (value && typeof value === "object" && !Array.isArray(value)) flatten(value, `${prefix}${key}.`, out);
      else out.push([prefix + key, value]);
    }
    return out;
  }

  function show(run) {
    current = run;
    document.title = `equipath view - ${run.name}`;
    document.getElementById("synthetic").hidden = !run.synthetic;
    const model = run.model || {};
    fill(document.getElementById("info"), [
      ["slide", run.slide.path], ["size", `${run.slide.width} x ${run.slide.height} px`],
      ["um/px", run.slide.mpp], ["model", model.name], ["model args", model.kwargs],
      ["checkpoint", run.checkpoint], ["outputs", run.folder]]);
    fill(document.getElementById("options"), flatten(run.options, "", []));
    const warnings = document.getElementById("warnings");
    warnings.replaceChildren(...run.warnings.map((w) => el("li", {}, w)));
    viewer.addOnceHandler("open", () => { addLayers(run); follow(); });
    viewer.open({tileSource: run.tile_source});
  }

  const select = document.getElementById("run");
  runs.forEach((run, i) => select.appendChild(el("option", {value: i}, run.name)));
  document.getElementById("run-label").hidden = runs.length < 2;
  select.addEventListener("change", () => show(runs[Number(select.value)]));
  window.equipathViewer = viewer;  // for tests and the browser console
  if (runs.length) show(runs[0]);
})();
