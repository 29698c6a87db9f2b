"use strict";
// spcs-whisper web page: upload, job list (polled while unfinished), transcript + translation viewer.
(() => {
  const LANGS = [
    ["en", "English"], ["hi", "Hindi"], ["es", "Spanish"], ["fr", "French"], ["de", "German"],
    ["it", "Italian"], ["pt", "Portuguese"], ["nl", "Dutch"], ["ru", "Russian"], ["uk", "Ukrainian"],
    ["pl", "Polish"], ["tr", "Turkish"], ["ar", "Arabic"], ["zh", "Chinese"], ["ja", "Japanese"],
    ["ko", "Korean"], ["id", "Indonesian"], ["vi", "Vietnamese"], ["bn", "Bengali"], ["ta", "Tamil"],
    ["te", "Telugu"], ["mr", "Marathi"], ["ur", "Urdu"], ["sv", "Swedish"],
  ];
  const UNFINISHED = new Set(["queued", "running", "transcribed", "translating"]);
  const HAS_TRANSCRIPT = new Set(["transcribed", "translating", "succeeded"]);
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, props = {}, ...kids) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...kids);
    return node;
  };

  const form = $("#upload-form"), fileInput = $("#file"), drop = $("#drop"), submitBtn = $("#submit");
  const errorBox = $("#error"), statusLine = $("#status"), jobsList = $("#jobs"), tokenInput = $("#token");
  const view = $("#view"), meta = $("#view-meta"), player = $("#player");
  const transcriptBox = $("#transcript"), translationBox = $("#translation");
  const downloads = { srt: $("#download-srt"), vtt: $("#download-vtt"), json: $("#download-json") };

  for (const [code, name] of LANGS) $("#language").append(el("option", { value: code, textContent: `${name} (${code})` }));
  tokenInput.value = localStorage.getItem("spcs-whisper-token") || "";
  tokenInput.addEventListener("change", () => localStorage.setItem("spcs-whisper-token", tokenInput.value.trim()));

  const token = () => tokenInput.value.trim();
  class ApiFailure extends Error {
    constructor(code, message, status) { super(message); this.code = code; this.status = status; }
  }
  async function api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (token()) headers["X-Api-Key"] = token();
    let resp;
    try {
      resp = await fetch(path, Object.assign({}, opts, { headers }));
    } catch (e) {
      throw new ApiFailure("network_error", `the service cannot be reached (${e.message})`, 0);
    }
    if (!resp.ok) {
      let code = `http_${resp.status}`, message = resp.statusText || "request failed";
      try {
        const body = await resp.json();
        if (body && body.error) ({ code, message } = body.error);
      } catch (_) { /* not JSON */ }
      throw new ApiFailure(code, message, resp.status);
    }
    return resp;
  }
  const showError = (err) => {
    if (!err) { errorBox.hidden = true; errorBox.textContent = ""; return; }
    errorBox.hidden = false;
    errorBox.replaceChildren(el("strong", { textContent: err.code || "error" }), `: ${err.message}`);
  };
  const announce = (text) => { statusLine.textContent = text; };
  const fmt = (t) => {
    const m = Math.floor(t / 60), s = t - m * 60;
    return `${String(m).padStart(2, "0")}:${s.toFixed(1).padStart(4, "0")}`;
  };
  const secs = (v) => (v == null ? "" : `${Number(v).toFixed(1)} s`);

  // --- upload ---
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) {
      fileInput.files = e.dataTransfer.files;
      announce(`Selected ${fileInput.files[0].name}`);
    }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(null);
    const file = fileInput.files[0];
    if (!file) { showError({ code: "missing_file", message: "choose an audio or video file first" }); fileInput.focus(); return; }
    const data = new FormData();
    data.append("file", file, file.name);
    data.append("language", $("#language").value);
    data.append("word_timestamps", $("#words").checked ? "true" : "false");
    if ($("#translate").checked) data.append("translate_to", "en");
    if ($("#speakers").value) data.append("speakers", $("#speakers").value);
    submitBtn.disabled = true;
    announce(`Uploading ${file.name}…`);
    try {
      const job = await (await api("/v1/jobs", { method: "POST", body: data })).json();
      announce(`Submitted ${job.source}: ${job.status}`);
      form.reset();
      await openJob(job.id);
      poll();
    } catch (err) {
      showError(err);
      announce("Upload failed");
    } finally {
      submitBtn.disabled = false;
    }
  });

  // --- job list ---
  const rows = new Map();
  let timer = null;
  function jobRow(job) {
    let li = rows.get(job.id);
    if (!li) {
      li = el("li", { className: "job" });
      li.dataset.id = job.id;
      li.btn = el("button", { type: "button", className: "src linkish" });
      li.badge = el("span", { className: "badge" });
      li.bar = el("progress", { max: 1, value: 0 });
      li.info = el("span", { className: "hint" });
      li.append(li.btn, li.badge, li.bar, li.info);
      li.addEventListener("click", () => openJob(job.id));
      rows.set(job.id, li);
    }
    const pct = Math.round((job.progress.fraction || 0) * 100);
    li.btn.textContent = job.source;
    li.btn.setAttribute("aria-label", `Open ${job.source}, ${job.status}, ${pct}%`);
    li.badge.textContent = job.status;
    li.badge.className = `badge ${job.status}`;
    li.bar.value = job.progress.fraction || 0;
    li.bar.setAttribute("aria-label", `${job.source} progress`);
    li.info.textContent = [`${pct}%`, secs(job.progress.audio_seconds ?? job.audio_seconds)].filter(Boolean).join(" · ");
    li.classList.toggle("active", job.id === current.id);
    return li;
  }
  async function refresh() {
    const { jobs } = await (await api("/v1/jobs?limit=20")).json();
    const items = jobs.map(jobRow);
    const order = [...jobsList.children].map((n) => n.dataset.id).join();
    if (order !== jobs.map((j) => j.id).join()) jobsList.replaceChildren(...items);
    if (!jobs.length) jobsList.replaceChildren(el("li", { className: "hint", textContent: "No jobs yet." }));
    const open = jobs.find((j) => j.id === current.id);
    if (open) await render(open);
    return jobs.some((j) => UNFINISHED.has(j.status));
  }
  async function poll() {
    clearTimeout(timer);
    let again = true;
    try {
      again = (await refresh()) || (current.job && UNFINISHED.has(current.job.status));
    } catch (err) {
      showError(err);
    }
    if (again) timer = setTimeout(poll, 1000);
  }

  // --- job view ---
  let current = { id: null };
  async function openJob(id) {
    if (current.id !== id) {
      current = { id, transcript: false, translation: false, status: null };
      location.hash = id;
      transcriptBox.replaceChildren();
      translationBox.replaceChildren();
      for (const [fmtName, a] of Object.entries(downloads)) {
        a.href = `/v1/jobs/${id}/transcript?format=${fmtName}`;
        a.hidden = true;
      }
      downloads.json.setAttribute("download", `${id}.json`);
      setAudio(id);
      view.hidden = false;
      rows.forEach((li, key) => li.classList.toggle("active", key === id));
    }
    try {
      await render(await (await api(`/v1/jobs/${id}`)).json());
    } catch (err) {
      showError(err);
    }
  }
  async function setAudio(id) {
    const url = `/v1/jobs/${id}/audio`;
    if (!token()) { player.src = url; return; }
    try { // an <audio> element cannot send the token header: fetch the file instead
      player.src = URL.createObjectURL(await (await api(url)).blob());
    } catch (err) { showError(err); }
  }
  async function render(job) {
    if (job.id !== current.id) return;
    current.job = job;
    const pct = Math.round((job.progress.fraction || 0) * 100);
    meta.textContent = `${job.source} · ${job.status}${job.status === "running" ? ` ${pct}%` : ""}` +
      (job.language ? ` · ${job.language}` : "") + (job.audio_seconds ? ` · ${secs(job.audio_seconds)}` : "") +
      (job.speakers ? ` · speakers: ${job.speakers}` : "");
    if (current.status !== job.status) {
      current.status = job.status;
      announce(`${job.source}: ${job.status}`);
    }
    if (HAS_TRANSCRIPT.has(job.status) && !current.transcript) {
      current.transcript = true;
      try {
        showTranscript(await (await api(`/v1/jobs/${job.id}/transcript?format=json`)).json());
      } catch (err) {
        current.transcript = false;
        showError(err);
      }
    }
    if (job.status === "failed" && job.error && job.error.code !== "translation_failed") {
      transcriptBox.replaceChildren(el("p", { className: "error", textContent: `${job.error.code}: ${job.error.message}` }));
    } else if (job.status === "cancelled") {
      transcriptBox.replaceChildren(el("p", { className: "hint", textContent: "This job was cancelled." }));
    } else if (!current.transcript) {
      const parts = [el("p", { className: "hint", textContent: `Transcribing… ${pct}%` })];
      if (job.status === "running") {
        try {  // the text decoded so far, while the job runs
          const soFar = await (await api(`/v1/jobs/${job.id}/transcript?format=json&partial=true`)).json();
          if (soFar.text) parts.push(el("p", { className: "partial", textContent: soFar.text }));
        } catch (e) {
          /* the partial text is a nicety: the final transcript follows */
        }
      }
      if (!current.transcript) transcriptBox.replaceChildren(...parts);
    }
    await showTranslation(job);
  }
  // Speakers: a coloured label (8 colours, by order of first appearance) where the speaker changes.
  function speakerLabel(speaker, order) {
    if (!order.has(speaker)) order.set(speaker, order.size);
    return el("span", { className: `speaker spk-${order.get(speaker) % 8}`, textContent: speaker });
  }
  function showTranscript(t) {
    const order = new Map((t.speakers || []).map((s, i) => [s, i]));
    let previous = null;
    const items = (t.segments || []).map((seg) => {
      const who = seg.speaker ? `${seg.speaker}: ` : "";
      const b = el("button", { type: "button", className: "segment" },
        el("span", { className: "ts", textContent: `${fmt(seg.start)} – ${fmt(seg.end)}` }));
      if (seg.speaker && seg.speaker !== previous) b.append(speakerLabel(seg.speaker, order));
      b.dataset.speaker = seg.speaker || "";
      previous = seg.speaker || null;
      b.append(el("span", { className: "text", textContent: seg.text.trim() }));
      b.setAttribute("aria-label", `Play ${fmt(seg.start)} to ${fmt(seg.end)}: ${who}${seg.text.trim()}`);
      b.addEventListener("click", () => playSegment(seg, b));
      return b;
    });
    transcriptBox.replaceChildren(el("h3", { textContent: `Transcript (${t.language || "?"})` }), ...items);
    if (!items.length) transcriptBox.append(el("p", { className: "hint", textContent: "No speech found." }));
    Object.values(downloads).forEach((a) => { a.hidden = false; });
  }
  async function showTranslation(job) {
    const panes = translationBox.parentElement;
    translationBox.hidden = !job.translate_to;
    panes.classList.toggle("two", Boolean(job.translate_to));
    if (!job.translate_to || current.translation) return;
    const head = el("h3", { textContent: `Translation (${job.translate_to})` });
    if (job.status === "succeeded") {
      current.translation = true;
      try {
        const tr = await (await api(`/v1/jobs/${job.id}/translation`)).json();
        translationBox.replaceChildren(head, el("p", { textContent: tr.text }),
          el("p", { className: "hint", textContent: `${tr.source_language} → ${tr.target_language} by ${tr.method}` }));
      } catch (err) {
        translationBox.replaceChildren(head, el("p", { className: "error", textContent: `${err.code}: ${err.message}` }));
      }
    } else if (job.status === "failed" || job.status === "cancelled") {
      const e = job.error || { code: job.status, message: "no translation" };
      translationBox.replaceChildren(head, el("p", { className: "error", textContent: `${e.code}: ${e.message}` }));
    } else {
      translationBox.replaceChildren(head, el("p", { className: "hint", textContent: "translating…" }));
    }
  }

  // --- player ---
  let stopAt = null;
  function playSegment(seg, button) {
    document.querySelectorAll(".segment.playing").forEach((n) => n.classList.remove("playing"));
    button.classList.add("playing");
    stopAt = seg.end;
    const start = () => {
      player.currentTime = seg.start;
      const p = player.play();
      if (p) p.catch((err) => announce(`Cannot play audio: ${err.message}`));
    };
    if (player.readyState >= 1) start();
    else player.addEventListener("loadedmetadata", start, { once: true });
  }
  player.addEventListener("timeupdate", () => {
    if (stopAt != null && player.currentTime >= stopAt) { player.pause(); stopAt = null; }
  });

  // downloads: with a token, fetch with the header and save the blob
  for (const a of Object.values(downloads)) {
    a.addEventListener("click", async (e) => {
      if (!token()) return;
      e.preventDefault();
      try {
        const resp = await api(a.getAttribute("href"));
        const cd = resp.headers.get("content-disposition") || "";
        const name = (cd.match(/filename="([^"]+)"/) || [])[1] || a.getAttribute("download") || "transcript";
        const link = el("a", { href: URL.createObjectURL(await resp.blob()), download: name });
        document.body.append(link); link.click(); link.remove();
      } catch (err) { showError(err); }
    });
  }

  if (location.hash.length > 1) openJob(decodeURIComponent(location.hash.slice(1)));
  poll();
})();
