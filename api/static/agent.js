// The agent page: the current customer's profile and each prompt as it arrives.
// Plain script, no build: the /v1 API with the page's session cookie, and EventSource.
"use strict";
(function () {
  const body = document.body;
  const agent = body.dataset.agent;
  const pinned = body.dataset.customer;  // ?customer=<id>
  const $ = (id) => document.getElementById(id);
  const KINDS = {
    recommend_product: "推荐产品 Recommend",
    introduce_or_answer: "介绍/解答 Introduce or answer",
    soothe_and_close: "安抚并结束 Soothe and close",
    escalate: "升级 Escalate",
  };
  let shown = null;

  function text(node, value) { node.textContent = value == null ? "—" : String(value); }
  function items(list, values, render) {
    list.replaceChildren();
    for (const value of values) {
      const li = document.createElement("li");
      li.textContent = render(value);
      list.appendChild(li);
    }
    if (!values.length) { const li = document.createElement("li"); li.textContent = "—"; list.appendChild(li); }
  }
  function notice(message) {
    $("notice").textContent = message;
    $("notice").hidden = false;
    $("profile").hidden = true;
  }

  function render(profile) {
    const name = profile.attributes && profile.attributes.name ? profile.attributes.name.value : "";
    text($("name"), name || "(未知姓名 name unknown)");
    text($("customer-id"), profile.customer_id);
    const emotion = profile.emotion || {};
    const average = emotion.average == null ? "" : ` · 趋势 trend ${emotion.average.toFixed(2)}`;
    $("emotion").className = emotion.last ? "emotion-" + emotion.last : "";
    text($("emotion"), (emotion.last || "—") + average +
      (emotion.negative_streak ? ` · 连续负面 ${emotion.negative_streak}` : ""));
    text($("priority"), profile.scores ? profile.scores.priority : null);
    const mine = (profile.relationships || []).find((r) => r.employee_id === agent);
    text($("closeness"), mine ? mine.closeness : 0);
    items($("accounts"), profile.accounts || [], (a) =>
      `${a.account_no} · ${a.role || "—"}` + (a.permissions.length ? ` (${a.permissions.join(", ")})` : ""));
    const keywords = $("keywords");
    keywords.replaceChildren();
    for (const k of profile.keywords || []) {
      const span = document.createElement("span");
      span.className = "tag";
      span.textContent = k.term;
      keywords.appendChild(span);
    }
    items($("needs"), profile.needs || [], (n) => `${n.need}: ${n.reason}`);
    items($("problems"), (profile.problems || []).slice(0, 5), (p) => {
      const r = p.resolution;
      const outcome = r ? `${r.type} ${r.outcome || ""}`.trim() : "未解决 unresolved";
      return `${p.at.slice(0, 10)} ${p.intent} — ${p.text} → ${outcome}`;
    });
    $("notice").hidden = true;
    $("profile").hidden = false;
  }

  async function show(customer) {
    const answer = await fetch(`/v1/profiles/${encodeURIComponent(customer)}`, { credentials: "same-origin" });
    if (answer.status === 403) { shown = customer; notice("无权查看该客户 Not connected to this customer"); return; }
    if (answer.status === 401) { location.reload(); return; }
    if (!answer.ok) { notice("没有这个客户 No such customer"); return; }
    shown = customer;
    render(await answer.json());
  }

  async function refresh() {
    let customer = pinned;
    if (!customer) {
      const answer = await fetch(`/v1/agents/${encodeURIComponent(agent)}/current`, { credentials: "same-origin" });
      if (!answer.ok) { if (!shown) notice("等待通话或会话 Waiting for a call or chat…"); return; }
      customer = (await answer.json()).customer_id;
    }
    await show(customer);
  }

  function addPrompt(prompt) {
    const li = document.createElement("li");
    li.className = prompt.kind;
    li.dataset.promptId = prompt.prompt_id;
    const kind = document.createElement("div");
    kind.className = "kind";
    kind.textContent = (KINDS[prompt.kind] || prompt.kind) + (prompt.product ? ` · ${prompt.product}` : "") +
      (prompt.phase ? ` · ${prompt.phase}` : "");
    const say = document.createElement("div");
    say.className = "text";
    say.textContent = prompt.text;
    const why = document.createElement("div");
    why.className = "reasons";
    why.textContent = (prompt.reasons || []).join(" · ");
    li.append(kind, say, why);
    $("prompts").prepend(li);
  }

  const stream = new EventSource(`/v1/agents/${encodeURIComponent(agent)}/prompts`);
  stream.onopen = () => { $("live").className = "live on"; };
  stream.onerror = () => { $("live").className = "live off"; };
  stream.addEventListener("agent.prompt", (event) => {
    const prompt = JSON.parse(event.data);
    addPrompt(prompt);
    if (!pinned && prompt.customer_id && prompt.customer_id !== shown) show(prompt.customer_id);
    else if (prompt.customer_id === shown) show(shown);
  });
  refresh();
  setInterval(refresh, 5000);
})();
