//! SentencePiece tokenization as llama.cpp does it for a GGUF whose `tokenizer.ggml.model` is `llama`
//! (Llama 2, Mistral's first models, Gemma 1-3): the same ids for the same text, checked against
//! llama.cpp by tests/fixtures/gemma3_tokens.json.
//!
//! The steps are those of `llama_vocab::impl::tokenize` for LLAMA_VOCAB_TYPE_SPM in llama.cpp's
//! `src/llama-vocab.cpp`, written anew:
//! 1. Special tokens are cut out of the text first (`tokenizer_st_partition`): longest text first,
//!    each splitting every text piece at every occurrence, left to right. Control and unknown tokens
//!    only with `parse_special` (and, in a chat prompt, only outside message content); user-defined
//!    tokens always (see `Spm::partition`).
//! 2. Each remaining piece of text gets a space in front when `add_space_prefix` is set and it is the
//!    first piece or follows a special token, and every ' ' becomes '▁' (U+2581).
//! 3. The piece is split into characters, and adjacent symbols whose concatenation is a vocabulary
//!    entry merge, the highest-scoring pair first (the leftmost on a tie), until no pair is in the
//!    vocabulary (`llm_tokenizer_spm_session`).
//! 4. A symbol that is not in the vocabulary (only a single character can be one) becomes its UTF-8
//!    bytes as `<0xAB>` tokens.

use super::tokenizer::{
    TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_USER_DEFINED,
};
use anyhow::{bail, Result};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;

/// Token texts that llama.cpp marks as control tokens at load whatever the GGUF says (its list of
/// end-of-generation texts in `llama_vocab::impl::load`; its end-of-turn and end-of-message lists are
/// part of it). This decides whether they are cut out of plain text: Gemma 3's `</s>` is stored as
/// user-defined, which would be cut out always, but llama.cpp makes it control, cut out only with
/// `parse_special`. (llama.cpp's exceptions for BPE vocabularies, such as Gemma 4's normal `</s>`, and
/// its fill-in-the-middle texts, promoted only when the GGUF names no such id, are not mirrored.)
const LLAMA_CPP_CONTROL_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// The token types llama.cpp works with after loading: the GGUF's, with the texts above made control.
pub fn llama_cpp_token_types(tokens: &[String], types: &mut [i32]) {
    for (t, ty) in tokens.iter().zip(types.iter_mut()) {
        if LLAMA_CPP_CONTROL_TEXTS.contains(&t.as_str()) {
            *ty = TOKEN_TYPE_CONTROL;
        }
    }
}

/// The bytes a token stands for in generated text (llama.cpp's `token_to_piece` without `special`):
/// control and unknown tokens nothing, user-defined tokens their text as it is, normal tokens their
/// text with '▁' as a space, byte tokens `<0xAB>` that byte. Unused and undefined tokens are nothing.
pub fn piece_bytes(text: &str, ty: i32) -> Vec<u8> {
    match ty {
        TOKEN_TYPE_USER_DEFINED => text.as_bytes().to_vec(),
        TOKEN_TYPE_NORMAL => text.replace('\u{2581}', " ").into_bytes(),
        TOKEN_TYPE_BYTE => byte_of_piece(text).map(|b| vec![b]).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The byte of a `<0xAB>` token.
fn byte_of_piece(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// A SentencePiece vocabulary, indexed once at load.
pub struct Spm {
    /// Every token's text to its id (the last id for a text stored twice, as in llama.cpp).
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    /// The token each byte falls back to: `<0xAB>`, else (for ASCII) the character itself.
    byte_tokens: [Option<u32>; 256],
    /// Where a byte has no token at all (llama.cpp would abort).
    unk: Option<u32>,
    add_space_prefix: bool,
    /// Control, unknown and user-defined tokens, in the order llama.cpp cuts them out of text.
    specials: Vec<Special>,
    /// A byte trie over the specials' texts, to find which of them occur in a text at all.
    trie: Vec<TrieNode>,
}

struct Special {
    text: String,
    id: u32,
    /// User-defined: cut out of plain text too.
    always: bool,
}

#[derive(Default)]
struct TrieNode {
    /// (byte, child node), sorted by byte.
    next: Vec<(u8, u32)>,
    /// The special whose text ends here (index into `specials`).
    special: Option<u32>,
}

/// A stretch of the text to tokenize, or a special token cut out of it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

impl Spm {
    /// `types` as llama.cpp has them (`llama_cpp_token_types`); `scores` one per token.
    pub fn new(tokens: Vec<String>, scores: Vec<f32>, types: &[i32], add_space_prefix: bool, unk: Option<u32>) -> Self {
        assert_eq!(tokens.len(), scores.len());
        assert_eq!(tokens.len(), types.len());
        let mut specials: Vec<Special> = tokens
            .iter()
            .zip(types)
            .enumerate()
            .filter(|(_, (t, &ty))| {
                !t.is_empty() && matches!(ty, TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_USER_DEFINED)
            })
            .map(|(i, (t, &ty))| Special { text: t.clone(), id: i as u32, always: ty == TOKEN_TYPE_USER_DEFINED })
            .collect();
        // Longest first, as llama.cpp sorts them. Its std::sort leaves the order of equal lengths
        // unspecified; here it is by id, which can only matter for two equally long specials that
        // overlap in the text.
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        let mut trie = vec![TrieNode::default()];
        for (si, s) in specials.iter().enumerate() {
            let mut node = 0usize;
            for &b in s.text.as_bytes() {
                node = match trie[node].next.binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(k) => trie[node].next[k].1 as usize,
                    Err(k) => {
                        let child = trie.len();
                        trie.push(TrieNode::default());
                        trie[node].next.insert(k, (b, child as u32));
                        child
                    }
                };
            }
            trie[node].special = Some(si as u32);
        }

        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.into_iter().enumerate() {
            ids.insert(t, i as u32);
        }
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = ids.get(format!("<0x{b:02X}>").as_str()).copied();
            if slot.is_none() && b < 0x80 {
                *slot = ids.get((b as u8 as char).encode_utf8(&mut [0; 4]) as &str).copied();
            }
        }
        Self { ids, scores, byte_tokens, unk, add_space_prefix, specials, trie }
    }

    /// The ids of `text`; with `parse_special`, control and unknown token texts become their ids too.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let whole = 0..text.len();
        self.encode_with_literal(text, if parse_special { &[] } else { std::slice::from_ref(&whole) })
    }

    /// The ids of `text`, where control and unknown token texts become their ids except inside the
    /// `literal` byte ranges, which are tokenized as text (a chat message's content).
    pub fn encode_with_literal(&self, text: &str, literal: &[Range<usize>]) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut after_special = true; // so the first piece gets the space prefix
        let mut piece = String::new();
        for f in self.partition(text, literal) {
            match f {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(start, end) => {
                    piece.clear();
                    if self.add_space_prefix && after_special {
                        piece.push('\u{2581}');
                    }
                    for c in text[start..end].chars() {
                        piece.push(if c == ' ' { '\u{2581}' } else { c });
                    }
                    self.encode_piece(&piece, &mut out)?;
                    after_special = false;
                }
            }
        }
        Ok(out)
    }

    /// The text of a control or unknown token (one that only `parse_special` cuts out).
    pub fn control_text(&self, id: u32) -> Option<String> {
        self.specials.iter().find(|s| s.id == id && !s.always).map(|s| s.text.clone())
    }

    /// Cuts the special tokens out of `text`, as llama.cpp's `tokenizer_st_partition`: for each
    /// special in turn (longest first), every text fragment is split at each occurrence of it, left to
    /// right. Control and unknown tokens are cut only outside the `literal` ranges; user-defined tokens
    /// are cut everywhere (so Gemma's "\n" and runs of spaces, which are user-defined, are always
    /// tokens of their own), as llama.cpp and Hugging Face tokenizers do.
    fn partition(&self, text: &str, literal: &[Range<usize>]) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        // Only the specials that occur in the whole text can occur in a fragment of it: find them
        // with the trie rather than searching for each of the thousands of them.
        let bytes = text.as_bytes();
        let mut present = Vec::new();
        for start in 0..bytes.len() {
            let mut node = 0usize;
            for &b in &bytes[start..] {
                match self.trie[node].next.binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(k) => node = self.trie[node].next[k].1 as usize,
                    Err(_) => break,
                }
                if let Some(si) = self.trie[node].special {
                    present.push(si);
                }
            }
        }
        present.sort_unstable();
        present.dedup();

        let mut frags = vec![Fragment::Text(0, text.len())];
        for si in present {
            let s = &self.specials[si as usize];
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(start, end) = f else {
                    next.push(f);
                    continue;
                };
                // Both texts are UTF-8, so a match starts and ends on character boundaries.
                let mut at = start;
                for (m, _) in text[start..end].match_indices(s.text.as_str()) {
                    let (m_start, m_end) = (start + m, start + m + s.text.len());
                    if !s.always && literal.iter().any(|r| m_start < r.end && r.start < m_end) {
                        continue;
                    }
                    if m_start > at {
                        next.push(Fragment::Text(at, m_start));
                    }
                    next.push(Fragment::Token(s.id));
                    at = m_end;
                }
                if at < end {
                    next.push(Fragment::Text(at, end));
                }
            }
            frags = next;
        }
        frags
    }

    /// One escaped piece of text (llama.cpp's `llm_tokenizer_spm_session::tokenize`).
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        // Symbols: the characters, as a doubly linked list over `syms` (usize::MAX: none).
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            let len = c.len_utf8();
            let next = if start + len == text.len() { NONE } else { i + 1 };
            syms.push(Symbol { start, len, prev: i.wrapping_sub(1), next });
        }
        if syms.is_empty() {
            return Ok(());
        }
        let mut queue = BinaryHeap::new();
        for i in 1..syms.len() {
            self.push_bigram(&syms, i - 1, i, text, &mut queue);
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (syms[bg.left], syms[bg.right]);
            // Stale: one side has merged with something else since this pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            syms[bg.left].len += r.len;
            syms[bg.right].len = 0;
            syms[bg.left].next = r.next;
            if r.next != NONE {
                syms[r.next].prev = bg.left;
            }
            let prev = syms[bg.left].prev;
            if prev != NONE {
                self.push_bigram(&syms, prev, bg.left, text, &mut queue);
            }
            if r.next != NONE {
                self.push_bigram(&syms, bg.left, r.next, text, &mut queue);
            }
        }
        let mut i = 0;
        while i != NONE {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            // Every merged symbol is a vocabulary entry, so (unlike llama.cpp's `resegment`, whose
            // split-back-into-halves branch is unreachable for this reason) only a single character
            // can miss: it becomes its bytes.
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        match self.byte_tokens[b as usize].or(self.unk) {
                            Some(id) => out.push(id),
                            None => bail!("the vocabulary has no token for byte 0x{b:02X} and no unknown token"),
                        }
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    fn push_bigram(&self, syms: &[Symbol], left: usize, right: usize, text: &str, queue: &mut BinaryHeap<Bigram>) {
        let start = syms[left].start;
        let size = syms[left].len + syms[right].len;
        if let Some(&id) = self.ids.get(&text[start..start + size]) {
            queue.push(Bigram { score: self.scores[id as usize], left, right, size });
        }
    }
}

const NONE: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    /// 0 once merged into the symbol on its left.
    len: usize,
    prev: usize,
    next: usize,
}

/// A pair of adjacent symbols whose concatenation is in the vocabulary.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// The pair's length in bytes when queued.
    size: usize,
}

/// Highest score first; on a tie, the leftmost pair (llama.cpp's `llm_bigram_spm::comparator`).
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.partial_cmp(&other.score).unwrap_or(Ordering::Equal).then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny vocabulary: control tokens, the byte tokens, user-defined tokens, then pieces with
    /// scores chosen so that the merge order is visible.
    fn vocab(add_space_prefix: bool) -> (Spm, Vec<String>, Vec<i32>) {
        let mut toks: Vec<(String, f32, i32)> = vec![
            ("<unk>".into(), 0.0, TOKEN_TYPE_UNKNOWN),
            ("<s>".into(), 0.0, TOKEN_TYPE_CONTROL),
            ("</s>".into(), 0.0, TOKEN_TYPE_USER_DEFINED), // made control, as llama.cpp does
            ("<turn>".into(), 0.0, TOKEN_TYPE_CONTROL),
            ("<tab>".into(), 0.0, TOKEN_TYPE_USER_DEFINED),
        ];
        for b in 0..=255u8 {
            toks.push((format!("<0x{b:02X}>"), 0.0, TOKEN_TYPE_BYTE));
        }
        for (t, s) in [
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("c", -2.0),
            ("d", -2.0),
            ("é", -2.0),
            ("<", -2.0),
            (">", -2.0),
            // "abc": "ab" (-5) outscores "bc" (-9), so the result is "ab" + "c", not "a" + "bc".
            ("ab", -5.0),
            ("bc", -9.0),
            ("▁a", -3.0),
            ("▁ab", -4.0),
            ("cd", -6.0),
            ("dc", -6.0),
        ] {
            toks.push((t.into(), s, TOKEN_TYPE_NORMAL));
        }
        let tokens: Vec<String> = toks.iter().map(|t| t.0.clone()).collect();
        let scores = toks.iter().map(|t| t.1).collect();
        let mut types: Vec<i32> = toks.iter().map(|t| t.2).collect();
        llama_cpp_token_types(&tokens, &mut types);
        (Spm::new(tokens.clone(), scores, &types, add_space_prefix, Some(0)), tokens, types)
    }

    fn texts(ids: &[u32], tokens: &[String]) -> Vec<String> {
        ids.iter().map(|&i| tokens[i as usize].clone()).collect()
    }

    fn decode(ids: &[u32], tokens: &[String], types: &[i32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| piece_bytes(&tokens[i as usize], types[i as usize])).collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn merges_the_highest_score_first() {
        let (spm, toks, _) = vocab(false);
        assert_eq!(texts(&spm.encode("abc", false).unwrap(), &toks), ["ab", "c"]);
        // "bcd": "bc" (-9) and "cd" (-6): "cd" wins, leaving "b".
        assert_eq!(texts(&spm.encode("bcd", false).unwrap(), &toks), ["b", "cd"]);
        // With a space: "▁a" (-3) first, then "▁ab" (-4) beats "ab" (already unreachable) and "bc".
        assert_eq!(texts(&spm.encode("x abc", false).unwrap(), &toks), ["<0x78>", "▁ab", "c"]);
    }

    #[test]
    fn ties_go_to_the_leftmost_pair() {
        let (spm, toks, _) = vocab(false);
        // "cd" and "dc" score the same.
        assert_eq!(texts(&spm.encode("cdc", false).unwrap(), &toks), ["cd", "c"]);
        assert_eq!(texts(&spm.encode("dcd", false).unwrap(), &toks), ["dc", "d"]);
    }

    #[test]
    fn bytes_for_what_the_vocabulary_lacks() {
        let (spm, toks, types) = vocab(false);
        // 'x' is not in it; 'é' is; '€' is not: its three UTF-8 bytes.
        let ids = spm.encode("xé€", false).unwrap();
        assert_eq!(texts(&ids, &toks), ["<0x78>", "é", "<0xE2>", "<0x82>", "<0xAC>"]);
        assert_eq!(decode(&ids, &toks, &types), "xé€");
    }

    #[test]
    fn space_prefix_on_and_off() {
        let (on, toks, _) = vocab(true);
        let (off, _, _) = vocab(false);
        assert_eq!(texts(&on.encode("ab", false).unwrap(), &toks), ["▁ab"]);
        assert_eq!(texts(&off.encode("ab", false).unwrap(), &toks), ["ab"]);
        assert!(on.encode("", false).unwrap().is_empty());
        // llama.cpp prefixes the first text and each text that follows a special token.
        assert_eq!(texts(&on.encode("ab<s>ab", true).unwrap(), &toks), ["▁ab", "<s>", "▁ab"]);
        assert_eq!(texts(&on.encode("ab<tab>ab", true).unwrap(), &toks), ["▁ab", "<tab>", "▁ab"]);
        assert_eq!(texts(&off.encode("ab<s>ab", true).unwrap(), &toks), ["ab", "<s>", "ab"]);
    }

    #[test]
    fn which_specials_are_cut_out() {
        let (spm, toks, types) = vocab(false);
        // Control: only with parse_special; plain, "<s>" is text ('<', 's' as a byte, '>').
        assert_eq!(texts(&spm.encode("a<s>", true).unwrap(), &toks), ["a", "<s>"]);
        assert_eq!(texts(&spm.encode("a<s>", false).unwrap(), &toks), ["a", "<", "<0x73>", ">"]);
        // Unknown tokens likewise.
        assert_eq!(texts(&spm.encode("<unk>", true).unwrap(), &toks), ["<unk>"]);
        assert_ne!(texts(&spm.encode("<unk>", false).unwrap(), &toks), ["<unk>"]);
        // User-defined: in both modes.
        for parse_special in [false, true] {
            let ids = spm.encode("a<tab>b", parse_special).unwrap();
            assert_eq!(texts(&ids, &toks), ["a", "<tab>", "b"]);
            assert_eq!(decode(&ids, &toks, &types), "a<tab>b");
        }
        // "</s>" is stored as user-defined but llama.cpp makes it control.
        assert_eq!(types[2], TOKEN_TYPE_CONTROL);
        assert_eq!(texts(&spm.encode("</s>", true).unwrap(), &toks), ["</s>"]);
        assert_eq!(spm.encode("</s>", false).unwrap().len(), 4);
        // Control tokens decode to nothing.
        assert_eq!(decode(&spm.encode("a<turn>b", true).unwrap(), &toks, &types), "ab");
    }

    #[test]
    fn control_texts_inside_literal_ranges_stay_text() {
        let (spm, toks, _) = vocab(true);
        // "<turn>" + content "a<turn>" + "<turn>": only the markup's two are cut; the user-defined
        // "<tab>" is cut inside the content too, as it is in any text.
        let text = "<turn>a<turn><tab><turn>";
        let ids = spm.encode_with_literal(text, std::slice::from_ref(&(6..18))).unwrap();
        let mut expected = vec!["<turn>".to_string()];
        expected.extend(texts(&spm.encode("a<turn>", false).unwrap(), &toks));
        expected.extend(["<tab>".to_string(), "<turn>".to_string()]);
        assert_eq!(texts(&ids, &toks), expected);
        assert!(!texts(&ids, &toks)[1..4].contains(&"<turn>".to_string()));
        assert_eq!(spm.encode_with_literal(text, &[]).unwrap(), spm.encode(text, true).unwrap());
        assert_eq!(spm.control_text(3).as_deref(), Some("<turn>"));
        assert_eq!(spm.control_text(4), None, "user-defined");
    }

    #[test]
    fn round_trips_plain_text() {
        let (spm, toks, types) = vocab(false);
        for text in ["abc dcba", "  a  b ", "é\ttab\nnewline", "日本語 🎉", "<turn> <s>"] {
            assert_eq!(decode(&spm.encode(text, false).unwrap(), &toks, &types), text, "{text:?}");
        }
        let (spm, toks, types) = vocab(true);
        assert_eq!(decode(&spm.encode("abc d", false).unwrap(), &toks, &types), " abc d");
    }
}
