// tests/interop/gguf_check.mjs -- runs a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU
// binary) and reads it with @huggingface/gguf, for gguf_test.sh. Usage: node gguf_check.mjs IN.json
// IN: [{gguf, text, prompt_ids, ids, greedy_tokens}, ...]; prints one JSON line per job:
// {tokens, greedy, next_probs, metadata, tensors}: tokens = llama.cpp's ids for text (no special
// tokens added); greedy = its temperature-0 continuation of prompt_ids; next_probs[t] = its
// p(ids[t+1] | ids[..t]); metadata and tensor shapes as the GGUF reader sees them.
import {readFileSync} from "node:fs";
import {createRequire} from "node:module";
import {pathToFileURL} from "node:url";

// The packages live in build/npm (launch/setup.sh), named by LMFORGE_NPM, not beside this script.
const npm = createRequire(process.env.LMFORGE_NPM + "/node_modules/");
const load = name => import(pathToFileURL(npm.resolve(name)).href);
const {getLlama} = await load("node-llama-cpp");
const {gguf} = await load("@huggingface/gguf");

const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
for (const input of jobs) {
  const {metadata, tensorInfos} = await gguf(input.gguf, {allowLocalFile: true});
  const model = await llama.loadModel({modelPath: input.gguf});
  const tokens = Array.from(model.tokenize(input.text, false));
  // An f32 KV cache (llama.cpp's default is f16) and no flash attention: the comparison then
  // measures the weights' type, not the cache's rounding.
  const context = await model.createContext({contextSize: 256, sequences: 1, threads: 2, flashAttention: false,
                                             experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
  const sequence = context.getSequence();
  const greedy = [];
  for await (const out of sequence.evaluateWithMetadata(input.prompt_ids, {confidence: true},
                                                        {temperature: 0, yieldEogToken: true})) {
    greedy.push(out.token);
    if (greedy.length >= input.greedy_tokens) break;
  }
  await sequence.clearHistory();
  const items = input.ids.map((id, i) => i + 1 < input.ids.length ? [id, {generateNext: {probabilities: true}}] : id);
  const outputs = await sequence.controlledEvaluate(items);
  const next_probs = [];
  for (let i = 0; i + 1 < input.ids.length; i++) next_probs.push(outputs[i].next.probabilities.get(input.ids[i + 1]) ?? 0);
  const meta = {};
  for (const [k, v] of Object.entries(metadata))
    meta[k] = Array.isArray(v) ? {length: v.length, head: v.slice(0, 3)} : typeof v === "bigint" ? Number(v) : v;
  const tensors = tensorInfos.map(t => ({name: t.name, shape: t.shape.map(Number), dtype: t.dtype}));
  console.log(JSON.stringify({gguf: input.gguf, tokens, greedy, next_probs, metadata: meta, tensors}));
  await context.dispose();
  await model.dispose();
}
