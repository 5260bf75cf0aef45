// tests/data/gpt2_tokenizer_reference.js -- writes the GPT-2 check's texts and the ids independent
// implementations give them: npm gpt-3-encoder, and when present js-tiktoken and HF tokenizers'
// native build. Usage: node gpt2_tokenizer_reference.js NPM_DIR OUT_DIR
// -> OUT_DIR/<case>.txt and <case>.<reference>.ids
"use strict";
const fs = require("fs");
const path = require("path");
const [npmDir, outDir] = process.argv.slice(2);
const modules = path.join(npmDir, "node_modules");

// A seeded generator, so the random cases are the same on every run (and debuggable).
let seed = 12345;
const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const ranges = [[0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0xa0, 0xff], [0x391, 0x3c9], [0x410, 0x44f],
                [0x3041, 0x3096], [0x4e00, 0x4fff], [0xac00, 0xac80], [0x1f300, 0x1f64f], [0x9, 0xd], [0x300, 0x36f]];
function randomText(n) {
  let s = "";
  for (let i = 0; i < n; ++i) {
    const [lo, hi] = ranges[Math.floor(next() * ranges.length)];
    s += String.fromCodePoint(lo + Math.floor(next() * (hi - lo + 1)));
    if (next() < 0.15) s += " ".repeat(1 + Math.floor(next() * 3));
  }
  return s;
}

const cases = {
  prose: "Hello, world! It's a test: don't, we'll, they've, I'm, you'd, she's. The END.",
  whitespace: "a  b   c\t\td\n\n\ne    \n  f   \n\t \u00a0\u3000end",
  numbers: "3.14159 1,000,000 2024-01-01 0x1F 12345678901234567890 1st 2nd 3rd -42 +7 1e-9 ٣٤٥ ½",
  latin: "naïve café Ünïcödé façade Straße ÅÄÖ œuvre ĳssel",
  cjk: "日本語のテキストです。中文文本，包括标点！한국어 텍스트 カタカナ",
  emoji: "I ❤️ 🍕 and 👨‍👩‍👧‍👦 family 🏳️‍🌈 🇯🇵👍🏽 ok",
  code: "def f(x):\n    return x**2 + 1  # comment\n\nint main() { printf(\"%d\\n\", a[i]); }\n\tif (a != b && c >= d) {}\n",
  long_words: "Pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious " + "a".repeat(300) +
      " " + "xyz".repeat(100) + " " + "🙂".repeat(20),
  contractions: "'s 'S 'll 'LL '' ''' ' s' rock'n'roll O'Neil can't WON'T y'all'd've",
  scripts: "Ελληνικά Русский العربية עברית हिन्दी ไทย ქართული Հայերեն",
  combining: "e\u0301 a\u0308 \u200b\u200d zero\u200bwidth x\u0338",
  controls: "\u0001\u0002\u007f tab\there\r\nCRLF\r\n\u000b\u000cend",
  edges: "   leading and trailing   ",
  urls: "https://example.com/path?q=1&r=two#frag user@example.org C:\\Users\\me ~/.bashrc $HOME",
  random_1: randomText(3000),
  random_2: randomText(3000),
};

// JavaScript's \s includes U+FEFF, Unicode's White_Space (PCRE2, Python's regex that GPT-2 was
// built with, Rust's regex) does not: text with a BOM is checked against HF tokenizers alone.
const rustOnly = { bom: "a \ufeffbom \ufeff\ufeff x" };

function optional(name, load) {
  try {
    return load(require(path.join(modules, name)));
  } catch (e) {
    process.stderr.write(name + " not installed: not compared against\n");
    return null;
  }
}

(async () => {
  const gpt2 = path.join(modules, "gpt-3-encoder");
  const encoder = require(gpt2);
  const tiktoken = optional("js-tiktoken", (m) => m.getEncoding("gpt2"));
  const hf = optional("@anush008/tokenizers", (m) => m);
  let hfTokenizer = null;
  if (hf) {
    hfTokenizer = new hf.Tokenizer(await hf.BPE.fromFile(path.join(gpt2, "encoder.json"), path.join(gpt2, "vocab.bpe")));
    hfTokenizer.setPreTokenizer(hf.byteLevelPreTokenizer(false, true));
  }
  fs.mkdirSync(outDir, { recursive: true });
  const write = (name, reference, ids) => fs.writeFileSync(path.join(outDir, `${name}.${reference}.ids`), ids.join(" ") + "\n");
  for (const [name, text] of Object.entries({ ...cases, ...rustOnly })) {
    fs.writeFileSync(path.join(outDir, name + ".txt"), text);
    if (hfTokenizer) write(name, "hf-tokenizers", (await hfTokenizer.encode(text)).getIds());
    if (name in rustOnly) continue;
    write(name, "gpt-3-encoder", encoder.encode(text));
    if (tiktoken) write(name, "js-tiktoken", tiktoken.encode(text));
  }
})();
