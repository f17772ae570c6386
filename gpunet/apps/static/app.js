// Draw on #pad with mouse, pen or finger; POST the drawing as PNG to /api/predict while drawing
// (debounced, one request in flight) and show the ten probabilities and the 28x28 input the net saw.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const seen = document.getElementById("seen").getContext("2d");
const topOut = document.getElementById("top");
const confidence = document.getElementById("confidence");
const statusLine = document.getElementById("status");
const bars = document.getElementById("bars");
const result = document.querySelector(".result");

const STROKE = pad.width / 14; // thick like MNIST's pen after scaling to 20 px
const DEBOUNCE_MS = 120;

// One labelled bar per class (0 to 9 for MNIST; /api/model may name them otherwise).
let classes = [..."0123456789"];
const rows = [];
function makeBars() {
  bars.replaceChildren();
  rows.length = 0;
  for (const name of classes) {
    const li = document.createElement("li");
    li.innerHTML = `<span class="digit"></span><span class="track"><span class="fill"></span></span>` +
                   `<span class="pct">–</span>`;
    li.querySelector(".digit").textContent = name;
    bars.appendChild(li);
    rows.push({ li, fill: li.querySelector(".fill"), pct: li.querySelector(".pct") });
  }
}

let drawing = false, last = null, hasInk = false;
let dirty = false, inFlight = false, timer = null, generation = 0;

function clearPad() {
  ctx.fillStyle = "#fff"; // an opaque white background, dark ink: preprocessing inverts it like MNIST
  ctx.fillRect(0, 0, pad.width, pad.height);
  seen.clearRect(0, 0, 28, 28);
  topOut.textContent = "–";
  confidence.textContent = "";
  for (const r of rows) { r.fill.style.width = "0"; r.pct.textContent = "–"; r.li.classList.remove("best"); }
  hasInk = false; dirty = false; generation++;
  result.classList.remove("stale");
  clearTimeout(timer);
  statusLine.textContent = "Draw one digit, 0 to 9, in the box.";
}

function point(e) {
  const box = pad.getBoundingClientRect();
  return { x: (e.clientX - box.left) * pad.width / box.width, y: (e.clientY - box.top) * pad.height / box.height };
}

function strokeTo(p) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = STROKE;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  last = p;
  hasInk = true;
  changed();
}

pad.addEventListener("pointerdown", (e) => {
  if (e.button !== 0) return;
  drawing = true;
  last = point(e);
  pad.setPointerCapture(e.pointerId);
  strokeTo(last); // a dot for a tap
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  for (const c of (events.length ? events : [e])) strokeTo(point(c));
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    clearTimeout(timer);
    send();
  });
}
document.getElementById("clear").addEventListener("click", clearPad);

function changed() {
  dirty = true;
  result.classList.add("stale"); // the bars show an older drawing until the next answer
  clearTimeout(timer);
  timer = setTimeout(send, DEBOUNCE_MS);
}

async function send() {
  if (inFlight || !dirty || !hasInk) return;
  dirty = false;
  inFlight = true;
  const sent = generation;
  try {
    const png = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const res = await fetch("/api/predict", { method: "POST", headers: { "Content-Type": "image/png" }, body: png });
    const answer = await res.json();
    if (sent !== generation) return; // cleared meanwhile
    if (!res.ok) throw new Error(answer.error || res.statusText);
    show(answer);
  } catch (err) {
    if (sent === generation) statusLine.textContent = `Could not predict: ${err.message}`;
  } finally {
    inFlight = false;
    if (dirty) changed();
    else if (sent === generation) result.classList.remove("stale");
  }
}

function show({ top, probabilities, image }) {
  topOut.textContent = classes[top];
  confidence.textContent = `${(100 * probabilities[top]).toFixed(1)}% sure`;
  probabilities.forEach((p, d) => {
    rows[d].fill.style.width = `${(100 * p).toFixed(1)}%`;
    rows[d].pct.textContent = `${(100 * p).toFixed(1)}%`;
    rows[d].li.classList.toggle("best", d === top);
  });
  const pixels = seen.createImageData(28, 28);
  image.flat().forEach((v, i) => {
    const g = Math.round(255 * v);
    pixels.data.set([g, g, g, 255], 4 * i);
  });
  seen.putImageData(pixels, 0, 0);
  statusLine.textContent = "Keep drawing, or Clear to start again.";
}

async function loadModel() {
  const el = document.getElementById("model");
  try {
    const m = await (await fetch("/api/model")).json();
    if (m.classes) { classes = m.classes; makeBars(); }
    const acc = m.test_accuracy == null ? "" : `, ${(100 * m.test_accuracy).toFixed(2)}% test accuracy`;
    el.textContent = `Network ${m.sizes.join("-")} trained on ${m.dataset || "an unknown dataset"}` +
                     `${m.epochs ? ` for ${m.epochs} epochs` : ""}${acc}, running on ${m.device}.`;
  } catch (err) {
    el.textContent = `Could not load the model description: ${err.message}`;
  }
}

makeBars();
clearPad();
loadModel();
