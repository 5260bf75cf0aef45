// tests/data/chat_masks_reference.js -- the trained text of each assistant turn, computed independently of
// lmforge: @huggingface/jinja renders the conversation, each assistant content is found by rendering the
// conversation again with that content replaced by a marker, and the turn runs from the family's assistant
// header (given) before it through the family's end-of-turn token (given) after it and the line break after.
// Usage: node chat_masks_reference.js NPM_DIR CASES.json OUT.json
// CASES.json: [{name, config (tokenizer_config.json), records (jsonl of {messages, tools?}), header, eot}]
// OUT.json: {name: [{whole, trained: [text per assistant turn]}]}
"use strict";
const fs = require("fs");
const path = require("path");
const [npmDir, casesPath, outPath] = process.argv.slice(2);
const { Template } = require(path.resolve(npmDir, "node_modules", "@huggingface", "jinja"));

function render(template, config, messages, tools) {
  const special = {};
  for (const k of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const v = config[k];
    if (v !== undefined && v !== null) special[k] = typeof v === "object" ? v.content : v;
  }
  return template.render({ ...special, messages, tools: tools ?? null, documents: null, add_generation_prompt: false });
}

const out = {};
for (const c of JSON.parse(fs.readFileSync(casesPath, "utf8"))) {
  const config = JSON.parse(fs.readFileSync(c.config, "utf8"));
  const template = new Template(config.chat_template);
  out[c.name] = [];
  for (const line of fs.readFileSync(c.records, "utf8").split("\n")) {
    if (!line.trim()) continue;
    const rec = JSON.parse(line);
    const whole = render(template, config, rec.messages, rec.tools);
    const trained = [];
    let cursor = 0;
    rec.messages.forEach((m, i) => {
      if (m.role !== "assistant") return;
      let start;  // where the content is written (or, when it is empty, where the header ends)
      if (m.content) {
        const marker = `\u0001content ${i}\u0001`;
        const changed = rec.messages.map((x, k) => (k === i ? { ...x, content: marker } : x));
        start = render(template, config, changed, rec.tools).indexOf(marker);
        if (start < 0) throw new Error(`${c.name}: message ${i}: the marker is not rendered`);
      } else {
        start = whole.indexOf(c.header, cursor) + c.header.length;
      }
      const begin = whole.lastIndexOf(c.header, start) + c.header.length;
      let end = whole.indexOf(c.eot, start + (m.content ? m.content.length : 0));
      if (begin < c.header.length || begin < cursor || end < 0)
        throw new Error(`${c.name}: message ${i}: header or end-of-turn not found`);
      end += c.eot.length;
      if (whole[end] === "\n") ++end;
      trained.push(whole.slice(begin, end));
      cursor = end;
    });
    out[c.name].push({ whole, trained });
  }
}
fs.writeFileSync(outPath, JSON.stringify(out, null, 1));
