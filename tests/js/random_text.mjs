// Prints random text for the tokenizer comparison (deterministic for a seed): fragments drawn from
// the places where GPT-2's pre-tokenizer has edge cases (whitespace kinds and runs, contractions,
// letters, marks, digits of several scripts, symbols, emoji sequences), glued in random order.
// U+0085 and U+FEFF are left out: js-tiktoken and tiktoken disagree on them (see make_fixtures.mjs).
//   node random_text.mjs SEED BYTES
const seed = Number(process.argv[2] ?? 1);
const target = Number(process.argv[3] ?? 100000);
let state = BigInt(seed) * 0x9E3779B97F4A7C15n + 1n;
function rand(n) { // xorshift64*, uniform enough for picking fragments
  state ^= state >> 12n; state ^= (state << 25n) & 0xFFFFFFFFFFFFFFFFn; state ^= state >> 27n;
  return Number(((state * 0x2545F4914F6CDD1Dn) & 0xFFFFFFFFFFFFFFFFn) >> 33n) % n;
}
const frags = [
  " ", " ", " ", "  ", "   ", "\t", "\n", "\n", "\r\n", "\r", "\u000B", "\u000C", "\u00A0", "\u1680", "\u2002",
  "\u2009", "\u200A", "\u2028", "\u2029", "\u202F", "\u205F", "\u3000", "\u180E", "\u200B", "\u200D",
  "'", "'", "s", "t", "re", "ve", "m", "ll", "d", "S", "T", "RE", "VE", "M", "LL", "D", "’",
  "the", "The", "THE", "and", "of", "a", "I", "hello", "world", "token", "izer", "x", "Q", "zz",
  "é", "É", "ß", "ñ", "ø", "ı", "İ", "ǅ", "e\u0301", "\u0301", "\u0308", "\u20DD", "\u0903", "\u093F",
  "я", "Ж", "λ", "Ω", "ש", "ب", "ة", "\u064E", "क", "्", "ष", "ก", "\u0E31", "한", "\u1100", "\u1161",
  "あ", "カ", "ｶ", "中", "文", "𝔸", "𝟙", "ǃ",
  "0", "1", "42", "2024", "3.14", "1,000", "٣", "۴", "४", "๕", "１", "²", "½", "Ⅻ", "①", "〇", "𝟘",
  "!", "?", ".", ",", ";", ":", "-", "--", "_", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "\"",
  "#", "$", "%", "&", "*", "+", "=", "@", "^", "`", "|", "~", "…", "—", "«", "»", "€", "©", "°", "\u0000",
  "\u0001", "\u001B", "\u007F", "\u0090",
  "😀", "👍", "🏽", "🏿", "\u200D", "👩\u200D💻", "👨\u200D👩\u200D👧", "🇺🇸", "1️⃣", "❤️", "\uFE0F", "🏳️\u200D🌈",
  "http://", "https://example.com/a?b=c", "www.", ".com", "<|endoftext|>", "<|", "|>",
];
let out = "";
let bytes = 0;
while (bytes < target) {
  let f = frags[rand(frags.length)];
  if (rand(50) === 0) f = f.repeat(2 + rand(40)); // occasional runs
  out += f;
  bytes += Buffer.byteLength(f);
}
process.stdout.write(out);
