// Writes zgpt's tokenizer fixtures (run from anywhere: node tests/js/make_fixtures.mjs):
//
//   tests/fixtures/tokenizer/stress.txt          a stress corpus built below from code points
//   tests/fixtures/tokenizer/stress.tokens       its ids from js-tiktoken (checked equal to tiktoken)
//   tests/fixtures/tokenizer/shakespeare.tokens  ids of data/tinyshakespeare/input.txt (338,025)
//   tests/fixtures/tokenizer/special.txt         text containing <|endoftext|>
//   tests/fixtures/tokenizer/special_allow.tokens     ... encoded with the special token allowed
//   tests/fixtures/tokenizer/special_ordinary.tokens  ... encoded as ordinary text
//   tests/fixtures/tokenizer/ws_diverge.txt      U+0085 and U+FEFF next to spaces and punctuation
//   tests/fixtures/tokenizer/ws_diverge.tokens   its ids from tiktoken (the Rust core, WASM) only
//   tests/fixtures/tokenizer/invalid_utf8.bin    byte strings that are not UTF-8 (round-trip tests)
//
// Reference: tiktoken's "gpt2" encoding. js-tiktoken's encode(text, [], []) is encode_ordinary.
// The two packages agree except on U+0085 and U+FEFF: tiktoken's regex \s is Unicode White_Space
// (has U+0085, not U+FEFF) while JavaScript's \s is the other way round. The stress corpus leaves
// those two out so both references agree on it; ws_diverge holds them and follows tiktoken.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { getEncoding } from "js-tiktoken";
import { get_encoding } from "tiktoken";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const out = join(root, "tests", "fixtures", "tokenizer");
const js = getEncoding("gpt2");
const wasm = get_encoding("gpt2");

const ordinaryJs = (t) => js.encode(t, [], []);
const ordinaryWasm = (t) => Array.from(wasm.encode_ordinary(t));
const fmt = (ids) => ids.join(" ") + "\n";
function same(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
function writeBoth(name, text) {
  const a = ordinaryJs(text), b = ordinaryWasm(text);
  if (!same(a, b)) throw new Error(`${name}: js-tiktoken and tiktoken disagree`);
  writeFileSync(join(out, name + ".tokens"), fmt(a));
  return a.length;
}

// ---- stress corpus ------------------------------------------------------------------------
const rep = (s, n) => s.repeat(n);
const lines = [
  // many scripts (letters, with their combining marks where the script uses them)
  "English: The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
  "Français: Ça, c'est l'été où ils s'étaient égarés — « déjà vu » ? Œuvre, naïveté, façade.",
  "Deutsch: Größenwahnsinnige Straßenbahnhaltestelle; ÄÖÜ äöü ß ẞ.",
  "Español: ¿Dónde está el niño? ¡Mañana será otro día! Pingüino.",
  "Polski/Čeština/Tiếng Việt: Zażółć gęślą jaźń; Příliš žluťoučký kůň; Tiếng Việt có dấu ở đây.",
  "Ελληνικά: Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. ΑΒΓΔ αβγδ ς.",
  "Русский: Съешь же ещё этих мягких французских булок, да выпей чаю. ЁЖИК ёжик.",
  "Українська: Чуєш їх, доцю, га? Кумедна ж ти, прощайся без ґольфів!",
  "Հայերեն: Բարեւ աշխարհ; ქართული: გამარჯობა მსოფლიო.",
  "עברית: שלום עולם, זהו מבחן. בְּרֵאשִׁית בָּרָא אֱלֹהִים",
  "العربية: مرحبا بالعالم! هذا اختبارٌ لِلنَّصِّ العَرَبِيِّ. فارسی: سلام دنیا",
  "हिन्दी: नमस्ते दुनिया, यह एक परीक्षण है। क्षत्रिय ज्ञान श्री",
  "বাংলা: আমি বাংলায় গান গাই। தமிழ்: வணக்கம் உலகம். తెలుగు: నమస్కారం",
  "ไทย: สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ ລາວ: ສະບາຍດີ",
  "བོད་ཡིག: བཀྲ་ཤིས་བདེ་ལེགས། ខ្មែរ: សួស្តីពិភពលោក မြန်မာ: မင်္ဂလာပါ",
  "한국어: 안녕하세요 세계! 한글은 조합형입니다. ᄒᆞᆫ글 (jamo)",
  "日本語: こんにちは世界。カタカナ、ひらがな、漢字が混ざった文章です。ｶﾀｶﾅ",
  "中文: 你好，世界！这是一个测试。繁體中文：憂鬱的臺灣烏龜。",
  "ግዕዝ: ሰላም ለዓለም። ᏣᎳᎩ: ᎣᏏᏲ ᏙᎯᏧ. Монгол: ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ᠌ සිංහල: ආයුබෝවන්",
  "Math & symbols: ∀x∈ℝ, ∃y: x²+y²=z² ⇒ ∑ᵢ aᵢ ≤ ∫₀^∞ f(t)dt ≈ π·e; ℵ₀ ≠ 𝔠; 𝒜𝓑𝕮𝖉 𝟘𝟙𝟚",
  // combining marks: decomposed accents, stacked marks, marks alone
  "Combining: e\u0301 a\u0300 n\u0303 o\u0308 u\u030A\u0323 \u0301alone x\u20DD ✓\uFE0E",
  "Zalgo: Z\u0364\u0311\u0313\u0324\u0354a\u0308\u0356\u036D\u0307l\u036E\u0312\u036Bg\u030C\u0317\u035A\u031Ao\u0319\u0314\u036E\u0307\u0350\u0307",
  "NFC vs NFD: caf\u00E9 caf\u0065\u0301 \u00C5ngstr\u00F6m A\u030Angstro\u0308m \uAC00 \u1100\u1161",
  // emoji: ZWJ families, skin tones, flags, keycaps, variation selectors, tags
  "Emoji: 😀😃😄 👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 👋🏽hello 🙋‍♀️ 🧑🏾‍💻 👩‍❤️‍💋‍👨",
  "Families: 👨‍👩‍👧‍👦 👩‍👩‍👦 👨🏻‍🤝‍👨🏿 🏳️‍🌈 🏴‍☠️ 🐻‍❄️",
  "Flags: 🇺🇸🇬🇧🇯🇵🇩🇪 🇫🇷 🏴󠁧󠁢󠁳󠁣󠁴󠁿 keycaps: 1️⃣ #️⃣ *️⃣ ❤️ ❤ ☺️ ✌🏿 text+emoji:ok👌done",
  // digits of several scripts, and other numbers
  "Digits: 0123456789 ٠١٢٣٤٥٦٧٨٩ ۰۱۲۳۴۵۶۷۸۹ ०१२३४५६७८९ ০১২৩৪৫৬৭৮৯ ๐๑๒๓๔๕๖๗๘๙ ០១២៣៤៥៦៧៨៩",
  "More numbers: ０１２３４５６７８９ 𝟎𝟏𝟐 ①②③ ⅠⅡⅢⅫ ⅰⅱ ½ ¾ ⅞ ² ³ ¹ ₀₁₂ 〇一二三 𒐀 ፩፪፫ ᠐᠑᠒",
  "Numerals: 1,234,567.89 -0.5 +3.14e-10 0x1F 0b1011 1e9 2024-01-31T23:59:59Z 12:30pm 50% $1,000 €20 ¥300",
  "Long number: 31415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679",
  // contractions, upper and lower case, odd apostrophes
  "Contractions: I'm you're he's she'd we've they'll it's can't won't shouldn't y'all o'clock",
  "UPPER: I'M YOU'RE HE'S SHE'D WE'VE THEY'LL IT'S CAN'T WON'T; Mixed: I'M You'Re He'S We'Ve They'Ll",
  "Edge: 's 't 're 've 'm 'll 'd ''s '''t 'S 'T 'RE ' s 'x 'ss 'llama 'dd 'd' rock'n'roll",
  "Curly: it’s we’re ‘quoted’ “double” „German“ ‚single‘ ‹angle› «guillemets» don`t",
  // whitespace of every kind (U+0085 and U+FEFF are in ws_diverge.txt)
  "Tabs:\tone\t\ttwo\t\t\tthree\t \t mixed\t",
  "CRLF line one\r\nCRLF line two\r\n\r\nafter blank CRLF\rlone CR\r\rtwo CRs",
  "NBSP:\u00A0a\u00A0\u00A0b \u00A0c\u00A0 d narrow\u202Fnbsp ideographic\u3000space\u3000\u3000x",
  "Unicode spaces: a\u2000b\u2001c\u2002d\u2003e\u2004f\u2005g\u2006h\u2007i\u2008j\u2009k\u200Al\u205Fm\u1680n",
  "Separators: line\u2028sep para\u2029sep vt\u000Bff\u000Cend zwsp\u200Bzwj\u200Dzwnj\u200Cmvs\u180Eend",
  "Controls: nul\u0000soh\u0001esc\u001B[31mred\u001B[0m del\u007F c1\u0090\u009B unit\u001Fsep",
  "Runs of spaces:  two   three    four     five      six       seven        eight         nine",
  "Spaces before punctuation ! ?  !  ;   , and after ,   words",
  "Trailing spaces at line end   ",
  "Trailing tab and spaces \t  ",
  "    Leading four spaces",
  "\t\tLeading tabs",
  " \n \n  \n",
  "",
  "",
  "Newline runs:\n\n\n\nend of runs",
  // code
  "def encode(self, text: str) -> list[int]:\n    \"\"\"Encode text.\"\"\"\n    return [self.ranks[b] for b in text.encode('utf-8')]  # comment",
  "int main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; i++) printf(\"%s\\n\", argv[i]);\n\treturn argc > 1 ? 0 : -1;\n}",
  "const re = /'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+/gu; x => x ** 2 >>> 0; a?.b ?? c; `tmpl ${x}`",
  "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\\u00e9\"}, \"empty\": {}}",
  "<html><body class=\"main\"><p>Hello&nbsp;&amp;&lt;world&gt;</p><!-- comment --></body></html>",
  "SELECT id, name FROM users WHERE email LIKE '%@example.com' AND age >= 18 ORDER BY name DESC;",
  "$ git commit -m \"fix: off-by-one\" && ./build/zgpt tokenize --input file.txt | wc -w 2>&1 >/dev/null",
  "    if x:\n        return {'a': 1}\n    else:\n        pass\n\n\n",
  // URLs, e-mail, paths, identifiers
  "URLs: https://example.com/path/to/page?query=1&lang=en#frag http://[::1]:8080/ ftp://user:pw@host.org/file.tar.gz",
  "More: www.wikipedia.org/wiki/Byte_pair_encoding mailto:someone@example.co.uk C:\\Windows\\System32 /usr/local/bin",
  "IDs: 550e8400-e29b-41d4-a716-446655440000 sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  "camelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case-id __dunder__ $jquery @decorator #hashtag",
  "Special text (ordinary here): <|endoftext|> <|endoftext|><|endoftext|> <|endoftext <|fim_prefix|>",
  // long repeated runs
  "Run a: " + rep("a", 3000),
  "Run ab: " + rep("ab", 1500),
  "Run bang: " + rep("!", 2000),
  "Run dots: " + rep(".", 1000) + rep("-", 500) + rep("=", 300),
  "Run spaces:" + rep(" ", 1000) + "x" + rep(" ", 257),
  "Run tabs:" + rep("\t", 300) + "y",
  "Run digits: " + rep("1234567890", 200),
  "Run emoji: " + rep("🙂", 300) + rep("👍🏽", 100),
  "Run CJK: " + rep("ー", 400) + rep("漢字", 200),
  "Run words: " + rep("the ", 500) + rep("The", 300),
  "Run mixed: " + rep("a1!", 400) + rep(" é", 300),
  "Run newlines:" + rep("\n", 200) + "end",
  "Run CRLF:" + rep("\r\n", 100) + "end",
  "Run NBSP:" + rep("\u00A0", 100) + "z" + rep("\u3000", 50),
];
const stress = lines.join("\n") + "\n  \t \n";
writeFileSync(join(out, "stress.txt"), stress);
const nStress = writeBoth("stress", stress);

// ---- Tiny Shakespeare ----------------------------------------------------------------------
const shakespeare = readFileSync(join(root, "data", "tinyshakespeare", "input.txt"), "utf8");
const nShakes = writeBoth("shakespeare", shakespeare);
if (nShakes !== 338025) throw new Error(`Tiny Shakespeare gave ${nShakes} tokens, expected 338025`);

// ---- special tokens --------------------------------------------------------------------------
const special = "Doc one.<|endoftext|>Doc two ends with a space <|endoftext|>  <|endoftext|>\n<|endoftext|>" +
  "<|endoftext|>x <|endoftext <|endoftext|>|> endoftext|> <|endoftext|>";
writeFileSync(join(out, "special.txt"), special);
const allowJs = js.encode(special, "all", []), allowWasm = Array.from(wasm.encode(special, "all", []));
if (!same(allowJs, allowWasm)) throw new Error("special: js-tiktoken and tiktoken disagree with specials allowed");
writeFileSync(join(out, "special_allow.tokens"), fmt(allowJs));
const ordJs = ordinaryJs(special);
if (!same(ordJs, ordinaryWasm(special))) throw new Error("special: references disagree on ordinary text");
writeFileSync(join(out, "special_ordinary.tokens"), fmt(ordJs));

// ---- where the two references differ: follow tiktoken ----------------------------------------
const wsParts = [];
for (const ch of ["\u0085", "\uFEFF"])
  for (const ctx of ["!", "a", " ", "1", "\u00A0", "\n", "é", "😀", "\t"])
    wsParts.push(ctx + ch, ch + ctx, " " + ch + ctx, ch + ch + ctx, ctx + ch + " " + ctx, " " + ch + " " + ctx);
const wsText = wsParts.join("|") + "\uFEFFstart and end\u0085";
writeFileSync(join(out, "ws_diverge.txt"), wsText);
const wsIds = ordinaryWasm(wsText);
if (same(wsIds, ordinaryJs(wsText))) throw new Error("ws_diverge: expected the references to differ here");
writeFileSync(join(out, "ws_diverge.tokens"), fmt(wsIds));

// ---- invalid UTF-8 (no reference takes bytes: round-trip tests only) --------------------------
const bad = Buffer.concat([
  Buffer.from("lone continuation: "), Buffer.from([0x80, 0xbf]),
  Buffer.from("\nbad lead bytes: "), Buffer.from([0xc0, 0xc1, 0xf5, 0xff, 0xfe]),
  Buffer.from("\ntruncated 2-byte: a"), Buffer.from([0xc3]), Buffer.from(" b"),
  Buffer.from("\ntruncated 3-byte: "), Buffer.from([0xe2, 0x82]), Buffer.from("x "), Buffer.from([0xe2]),
  Buffer.from("\ntruncated 4-byte emoji: "), Buffer.from([0xf0, 0x9f, 0x98]), Buffer.from("!"),
  Buffer.from("\noverlong slash: "), Buffer.from([0xc0, 0xaf, 0xe0, 0x80, 0xaf]),
  Buffer.from("\nlone surrogates (CESU): "), Buffer.from([0xed, 0xa0, 0x80, 0xed, 0xbf, 0xbf]), Buffer.from(" word"),
  Buffer.from("\nsurrogate pair as CESU-8: "), Buffer.from([0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]),
  Buffer.from("\nabove U+10FFFF: "), Buffer.from([0xf4, 0x90, 0x80, 0x80]),
  Buffer.from("\nLatin-1 text: caf"), Buffer.from([0xe9]), Buffer.from(" na"), Buffer.from([0xef]), Buffer.from("ve"),
  Buffer.from("\nspaces around:  "), Buffer.from([0xff]), Buffer.from("  "), Buffer.from([0xfe, 0xfe]), Buffer.from("   x"),
  Buffer.from("\nrun: "), Buffer.from(new Array(500).fill(0xff)), Buffer.from([0x80, 0x80, 0x80]),
  Buffer.from("\nvalid after: ok 👍🏽\n"), Buffer.from([0xe2, 0x82]),
]);
writeFileSync(join(out, "invalid_utf8.bin"), bad);

console.log(`stress.txt: ${Buffer.byteLength(stress)} bytes, ${nStress} tokens; shakespeare: ${nShakes} tokens; ` +
  `ws_diverge: ${wsIds.length} tokens; invalid_utf8.bin: ${bad.length} bytes`);
