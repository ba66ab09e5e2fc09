// Encoding speed of the npm references on one file (used by bench/tokenizer_bench.sh):
// prints "<impl> <MB/s> <tokens>" per line. Loading the vocabulary is not timed; each encoder runs
// once to warm up, then repeatedly for at least `seconds`, single-threaded.
//   node bench.mjs FILE [seconds]
import { readFileSync } from "node:fs";
import { getEncoding } from "js-tiktoken";
import { get_encoding } from "tiktoken";

const file = process.argv[2];
const seconds = Number(process.argv[3] ?? 3);
if (!file || !(seconds > 0)) {
  console.error("usage: node bench.mjs FILE [seconds]");
  process.exit(2);
}
const text = readFileSync(file, "utf8");
const bytes = Buffer.byteLength(text);

function bench(name, encode) {
  const n = encode().length; // warm-up (and JIT compilation of the JS code)
  let runs = 0;
  const t0 = process.hrtime.bigint();
  let t = t0;
  while (Number(t - t0) < seconds * 1e9) {
    encode();
    runs++;
    t = process.hrtime.bigint();
  }
  const mbps = (bytes * runs) / (Number(t - t0) / 1e9) / 1e6;
  console.log(`${name} ${mbps.toFixed(2)} ${n}`);
}

const wasm = get_encoding("gpt2");
bench("tiktoken", () => wasm.encode_ordinary(text));
wasm.free();
const js = getEncoding("gpt2");
bench("js-tiktoken", () => js.encode(text, [], []));
