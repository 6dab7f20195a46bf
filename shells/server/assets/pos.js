// Till's point-of-sale page. Talks only to the server that served it: the store API with the
// cashier token (from the URL fragment `#token=...` or this browser's storage).
"use strict";
(function () {
  const store = decodeURIComponent(location.pathname.replace(/^\/pos\//, "").replace(/\/$/, ""));
  const api = "/api/v1/stores/" + encodeURIComponent(store);
  const tokenKey = "till-pos-token:" + store;
  const $ = (id) => document.getElementById(id);
  let amount = "";
  let current = null; // the invoice shown
  let stream = null; // AbortController of the event stream
  let poll = null;

  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    localStorage.setItem(tokenKey, fragment.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  const token = () => localStorage.getItem(tokenKey);

  $("store-name").textContent = store;
  document.title = store + " · Till";

  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  function show(section) {
    for (const id of ["login", "sale", "invoice"]) $(id).hidden = id !== section;
    $("logout").hidden = section === "login";
  }

  async function call(method, path, body) {
    const response = await fetch(api + path, {
      method,
      headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (response.status === 401) {
      localStorage.removeItem(tokenKey);
      show("login");
      throw new Error("The cashier token was refused; sign in again.");
    }
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error || message; } catch (_) {}
      throw new Error(message);
    }
    return response;
  }

  function renderAmount() {
    $("amount-value").textContent = Number(amount || "0").toLocaleString("en-US");
    $("charge").disabled = !(Number(amount) > 0);
  }

  function press(key) {
    if (key === "C") amount = "";
    else if (key === "back") amount = amount.slice(0, -1);
    else if (amount.length < 8 && !(amount === "" && key === "0")) amount += key;
    renderAmount();
  }

  function renderStatus(invoice) {
    const status = $("status");
    status.className = "status " + invoice.status;
    status.textContent = { new: "Waiting for payment", paid: "Paid", expired: "Expired" }[invoice.status] || invoice.status;
    status.dataset.status = invoice.status;
    if (invoice.status !== "new") stopWatching();
  }

  function stopWatching() {
    if (stream) { stream.abort(); stream = null; }
    if (poll) { clearInterval(poll); poll = null; }
  }

  // Server-sent events read with fetch, which (unlike EventSource) can send the token.
  async function watch() {
    stopWatching();
    const controller = new AbortController();
    stream = controller;
    // A slow fallback in case a proxy buffers the stream.
    poll = setInterval(refresh, 5000);
    try {
      const response = await fetch(api + "/invoices/events", {
        headers: { "Authorization": "Bearer " + token() },
        signal: controller.signal,
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          const invoice = JSON.parse(data);
          if (current && invoice.id === current.id) { current = invoice; renderStatus(invoice); }
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    // The stream ended while still waiting: reconnect.
    if (stream === controller && current && current.status === "new") setTimeout(watch, 1000);
  }

  async function refresh() {
    if (!current) return;
    try {
      const invoice = await (await call("GET", "/invoices/" + current.id)).json();
      current = invoice;
      renderStatus(invoice);
    } catch (_) {}
  }

  async function charge() {
    showError("");
    $("charge").disabled = true;
    try {
      const description = $("description").value.trim();
      const response = await call("POST", "/invoices", { amount_sat: Number(amount), description });
      current = await response.json();
      const svg = await (await call("GET", "/invoices/" + current.id + "/qr.svg")).text();
      $("qr").innerHTML = svg;
      $("bolt11").value = current.bolt11;
      $("invoice-amount").textContent = current.amount_sat.toLocaleString("en-US") + " sat" +
        (current.description ? " · " + current.description : "");
      renderStatus(current);
      show("invoice");
      watch();
    } catch (e) {
      showError(e.message);
    } finally {
      renderAmount();
    }
  }

  $("keypad").addEventListener("click", (e) => {
    const key = e.target.closest("button")?.dataset.key;
    if (key) press(key);
  });
  document.addEventListener("keydown", (e) => {
    if (!$("sale").hidden && document.activeElement !== $("description")) {
      if (/^[0-9]$/.test(e.key)) press(e.key);
      else if (e.key === "Backspace") press("back");
      else if (e.key === "Enter" && !$("charge").disabled) charge();
    }
  });
  $("charge").addEventListener("click", charge);
  $("copy").addEventListener("click", async () => {
    $("bolt11").select();
    try { await navigator.clipboard.writeText($("bolt11").value); } catch (_) { document.execCommand("copy"); }
    $("copy").textContent = "Copied";
    setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
  });
  $("new-sale").addEventListener("click", () => {
    stopWatching();
    current = null;
    amount = "";
    $("description").value = "";
    renderAmount();
    show("sale");
  });
  $("token-save").addEventListener("click", () => {
    const value = $("token-input").value.trim();
    if (!value) return;
    localStorage.setItem(tokenKey, value);
    $("token-input").value = "";
    show("sale");
  });
  $("logout").addEventListener("click", () => {
    stopWatching();
    localStorage.removeItem(tokenKey);
    show("login");
  });

  renderAmount();
  show(token() ? "sale" : "login");
})();
