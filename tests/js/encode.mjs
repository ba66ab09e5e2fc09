// Reference GPT-2 encoder for zgpt's tests: prints the token ids of a UTF-8 file in the same format
// as `zgpt tokenize` (decimal ids separated by single spaces, newline at the end).
//
//   node encode.mjs [--impl js-tiktoken|tiktoken] [--allow-special] FILE
//
// js-tiktoken (pure JS) is the default: getEncoding('gpt2').encode(text, [], []) is tiktoken's
// encode_ordinary. `--impl tiktoken` uses the npm tiktoken package (tiktoken's Rust core as WASM).
import { readFileSync } from "node:fs";
import { getEncoding } from "js-tiktoken";
import { get_encoding } from "tiktoken";

let impl = "js-tiktoken";
let allowSpecial = false;
const files = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--impl") impl = args[++i];
  else if (args[i] === "--allow-special") allowSpecial = true;
  else files.push(args[i]);
}
if (files.length !== 1 || !["js-tiktoken", "tiktoken"].includes(impl)) {
  console.error("usage: node encode.mjs [--impl js-tiktoken|tiktoken] [--allow-special] FILE");
  process.exit(2);
}

const text = readFileSync(files[0], "utf8");
let ids;
if (impl === "js-tiktoken") {
  ids = getEncoding("gpt2").encode(text, allowSpecial ? "all" : [], []);
} else {
  const enc = get_encoding("gpt2");
  ids = Array.from(allowSpecial ? enc.encode(text, "all", []) : enc.encode_ordinary(text));
  enc.free();
}
process.stdout.write(ids.join(" ") + "\n");
