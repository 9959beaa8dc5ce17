//! Text <-> token ids, built from a GGUF's own metadata or a Hugging Face `tokenizer.json`.
//!
//! A GGUF's tokenizer is the one its `tokenizer.ggml.model` names, built as llama.cpp builds it, so our
//! ids equal llama.cpp's for the same file:
//! - `gpt2` (byte-level BPE) goes through the `tokenizers` crate, with the pre-tokenizer that
//!   `tokenizer.ggml.pre` names in llama.cpp (its regex list in `llama-vocab.cpp`);
//!   tests/fixtures/smollm2_tokens.json, made with llama.cpp, checks it.
//! - `llama` (SentencePiece: merges by score, byte fallback to `<0xAB>` tokens) is our own port of
//!   llama.cpp's, in `super::spm`; tests/fixtures/gemma3_tokens.json checks it.
//!
//! A Hugging Face folder's `tokenizer.json` goes through the `tokenizers` crate as it is.
//! Decoding is ours: every id maps to the bytes it stands for, so a stream of ids can be turned into
//! text incrementally without re-decoding the whole sequence (see `engine::detok`).

use super::spm::{self, Spm};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use std::ops::Range;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's LLAMA3 regex (also used by several later BPE models).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's QWEN2 regex: like LLAMA3 with single digits.
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
pub(super) const TOKEN_TYPE_NORMAL: i32 = 1;
pub(super) const TOKEN_TYPE_UNKNOWN: i32 = 2;
pub(super) const TOKEN_TYPE_CONTROL: i32 = 3;
pub(super) const TOKEN_TYPE_USER_DEFINED: i32 = 4;
pub(super) const TOKEN_TYPE_BYTE: i32 = 6;

/// Texts of control tokens that end a turn in common chat formats. llama.cpp treats these as
/// end-of-generation too, whatever the GGUF's eos id says.
const END_OF_TURN_TEXTS: &[&str] =
    &["<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>", "</s>", "<|eom_id|>"];

pub struct TextTokenizer {
    encoder: Encoder,
    /// The bytes each id decodes to; empty for control tokens, which never reach a client.
    token_bytes: Vec<Vec<u8>>,
    /// Ids that end generation.
    eog: Vec<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Whether a prompt starts with the BOS token (tokenizer.ggml.add_bos_token).
    pub add_bos: Option<u32>,
}

enum Encoder {
    /// Through the `tokenizers` crate: GGUF `gpt2` BPE, and Hugging Face folders.
    Hf {
        /// Splits special tokens out of the text: for prompts, as llama.cpp's server does.
        special: Tokenizer,
        /// Encodes control-token look-alikes as text (user-defined tokens are still cut out, as
        /// llama.cpp does without `parse_special`).
        plain: Tokenizer,
        /// The control (special) token ids, sorted.
        control: Vec<u32>,
    },
    /// GGUF `llama` SentencePiece; `Spm::encode` takes `parse_special` itself.
    Spm(Spm),
}

impl TextTokenizer {
    pub fn from_gguf(md: &HashMap<String, Value>) -> Result<Self> {
        let get = |k: &str| md.get(k).ok_or_else(|| anyhow!("GGUF has no `{k}`"));
        let model = get("tokenizer.ggml.model")?.to_string()?;
        if model != "gpt2" && model != "llama" {
            bail!("tokenizer model `{model}` is not supported yet (only gpt2-style BPE and llama SentencePiece)");
        }
        let tokens: Vec<String> = get("tokenizer.ggml.tokens")?
            .to_vec()?
            .iter()
            .map(|v| Ok(v.to_string()?.clone()))
            .collect::<Result<_>>()?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v.to_vec()?.iter().map(|t| Ok(t.to_i32()?)).collect::<Result<_>>()?,
            None => vec![TOKEN_TYPE_NORMAL; tokens.len()],
        };
        if types.len() < tokens.len() {
            bail!("tokenizer.ggml.token_type has {} entries for {} tokens", types.len(), tokens.len());
        }
        if model == "llama" {
            return Self::spm_from_gguf(md, tokens, types);
        }
        let merges: Vec<(String, String)> = get("tokenizer.ggml.merges")?
            .to_vec()?
            .iter()
            .map(|m| {
                let m = m.to_string()?;
                let (a, b) = m.split_once(' ').ok_or_else(|| anyhow!("bad merge `{m}`"))?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_>>()?;
        let pre =
            md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str).unwrap_or("default");
        let id_of = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());

        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| anyhow!("BPE: {e}"))?;
        let mut special = Tokenizer::new(bpe);
        special.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .map(|(s, &t)| AddedToken::from(s.clone(), t == TOKEN_TYPE_CONTROL))
            .collect();
        special.add_special_tokens(specials).map_err(|e| anyhow!("special tokens: {e}"))?;
        let mut plain = special.clone();
        plain.set_encode_special_tokens(true);
        let control = (0..tokens.len() as u32).filter(|&i| types[i as usize] == TOKEN_TYPE_CONTROL).collect();

        let byte_of = byte_level_decoder();
        let token_bytes = tokens
            .iter()
            .zip(&types)
            .map(|(t, &ty)| match ty {
                TOKEN_TYPE_CONTROL => Vec::new(),
                TOKEN_TYPE_USER_DEFINED => t.as_bytes().to_vec(),
                _ => t.chars().map(|c| byte_of.get(&c).copied().unwrap_or(b'?')).collect(),
            })
            .collect();

        let eog_ids = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"];
        let eog = end_of_generation(&eog_ids.map(id_of), &tokens, &types);
        let text_of = |k: &str| id_of(k).and_then(|i| tokens.get(i as usize).cloned());
        let add_bos = match md.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()) {
            Some(true) => id_of("tokenizer.ggml.bos_token_id"),
            _ => None,
        };
        Ok(Self {
            encoder: Encoder::Hf { special, plain, control },
            token_bytes,
            eog,
            bos_token: text_of("tokenizer.ggml.bos_token_id"),
            eos_token: text_of("tokenizer.ggml.eos_token_id"),
            add_bos,
        })
    }

    /// A `llama` (SentencePiece) vocabulary, read as llama.cpp reads it: missing keys take its
    /// defaults for SPM (bos 1, eos 2, unk 0, add_bos_token and add_space_prefix true), and the
    /// texts it makes control tokens are made control here too (`spm::llama_cpp_token_types`).
    fn spm_from_gguf(md: &HashMap<String, Value>, tokens: Vec<String>, mut types: Vec<i32>) -> Result<Self> {
        let n = tokens.len();
        types.truncate(n);
        let mut scores: Vec<f32> = match md.get("tokenizer.ggml.scores") {
            Some(v) => v
                .to_vec()?
                .iter()
                .map(|s| Ok(s.to_f32().or_else(|_| s.to_i32().map(|i| i as f32))?))
                .collect::<Result<_>>()?,
            None => vec![0.0; n],
        };
        if scores.len() < n {
            bail!("tokenizer.ggml.scores has {} entries for {n} tokens", scores.len());
        }
        scores.truncate(n);
        spm::llama_cpp_token_types(&tokens, &mut types);

        let in_vocab = |i: &u32| (*i as usize) < n;
        let id_of = |k: &str| md.get(k).and_then(|v| v.to_u32().ok()).filter(in_vocab);
        let id_or = |k: &str, default: u32| id_of(k).or(Some(default).filter(in_vocab));
        let flag = |k: &str| md.get(k).and_then(|v| v.to_bool().ok());
        let bos = id_or("tokenizer.ggml.bos_token_id", 1);
        let eos = id_or("tokenizer.ggml.eos_token_id", 2);
        let unk = id_or("tokenizer.ggml.unknown_token_id", 0);
        let add_bos = if flag("tokenizer.ggml.add_bos_token").unwrap_or(true) { bos } else { None };
        let add_space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);

        let token_bytes = tokens.iter().zip(&types).map(|(t, &ty)| spm::piece_bytes(t, ty)).collect();
        let eog = end_of_generation(
            &[eos, id_of("tokenizer.ggml.eot_token_id"), id_of("tokenizer.ggml.eom_token_id")],
            &tokens,
            &types,
        );
        let text_of = |id: Option<u32>| id.map(|i| tokens[i as usize].clone());
        let (bos_token, eos_token) = (text_of(bos), text_of(eos));
        let encoder = Encoder::Spm(Spm::new(tokens, scores, &types, add_space_prefix, unk));
        Ok(Self { encoder, token_bytes, eog, bos_token, eos_token, add_bos })
    }

    /// A Hugging Face `tokenizer.json`; `config` is `tokenizer_config.json`, `extra_eos` the
    /// generation config's eos ids.
    pub fn from_hf(tokenizer_json: &std::path::Path, config: &serde_json::Value, extra_eos: &[u32]) -> Result<Self> {
        let tok = Tokenizer::from_file(tokenizer_json).map_err(|e| anyhow!("{}: {e}", tokenizer_json.display()))?;
        let token_text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
            _ => None,
        };
        let bos_token = config.get("bos_token").and_then(token_text);
        let eos_token = config.get("eos_token").and_then(token_text);
        let byte_level =
            serde_json::to_value(tok.get_decoder()).ok().is_some_and(|d| d.to_string().contains("ByteLevel"));
        let byte_of = byte_level_decoder();
        let specials: std::collections::HashSet<u32> =
            tok.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
        let size = tok.get_vocab_size(true);
        let token_bytes = (0..size as u32)
            .map(|id| {
                let Some(t) = tok.id_to_token(id) else { return Vec::new() };
                if specials.contains(&id) {
                    Vec::new()
                } else if byte_level {
                    t.chars().map(|c| byte_of.get(&c).copied().unwrap_or(b'?')).collect()
                } else {
                    sentencepiece_bytes(&t)
                }
            })
            .collect();
        let mut eog: Vec<u32> = extra_eos.to_vec();
        if let Some(id) = eos_token.as_deref().and_then(|t| tok.token_to_id(t)) {
            eog.push(id);
        }
        for &id in &specials {
            if tok.id_to_token(id).is_some_and(|t| END_OF_TURN_TEXTS.contains(&t.as_str())) {
                eog.push(id);
            }
        }
        eog.sort_unstable();
        eog.dedup();
        let add_bos = match config.get("add_bos_token").and_then(|v| v.as_bool()) {
            Some(true) => bos_token.as_deref().and_then(|t| tok.token_to_id(t)),
            _ => None,
        };
        let mut plain = tok.clone();
        plain.set_encode_special_tokens(true);
        let mut control: Vec<u32> = specials.into_iter().collect();
        control.sort_unstable();
        let encoder = Encoder::Hf { special: tok, plain, control };
        Ok(Self { encoder, token_bytes, eog, bos_token, eos_token, add_bos })
    }

    /// Token ids of `text`. With `parse_special`, special-token texts become their ids.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        match &self.encoder {
            Encoder::Hf { special, plain, .. } => hf_ids(if parse_special { special } else { plain }, text),
            Encoder::Spm(spm) => spm.encode(text, parse_special),
        }
    }

    /// A prompt's token ids: special-token texts become their ids (as llama.cpp's server does), and
    /// the BOS token comes first when the model asks for one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_chat(text, &[])
    }

    /// A rendered chat prompt's token ids: as `encode_prompt`, except that inside the `literal` byte
    /// ranges (the messages' content; sorted and disjoint) a control token's text is text. Only the template's own markup
    /// makes control tokens, so a message cannot close its turn and open a system one.
    pub fn encode_chat(&self, text: &str, literal: &[Range<usize>]) -> Result<Vec<u32>> {
        let mut ids = match &self.encoder {
            Encoder::Hf { special, plain, control } => hf_chat_ids(special, plain, control, text, literal)?,
            Encoder::Spm(spm) => spm.encode_with_literal(text, literal)?,
        };
        if let Some(bos) = self.add_bos {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The first control token whose text occurs in `text`, if any.
    pub fn control_token_in(&self, text: &str) -> Result<Option<String>> {
        Ok(match &self.encoder {
            Encoder::Hf { special, control, .. } => {
                let ids = hf_ids(special, text)?;
                ids.into_iter().find(|id| control.binary_search(id).is_ok()).and_then(|id| special.id_to_token(id))
            }
            Encoder::Spm(spm) => spm.encode(text, true)?.into_iter().find_map(|id| spm.control_text(id)),
        })
    }

    /// How many ids the vocabulary has: valid ids are below it.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The bytes an id decodes to (nothing for control tokens and unknown ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Whole-sequence decode, lossy on broken UTF-8.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.token_bytes(i).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The tokens that end a turn or the text, sorted.
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
}

fn hf_ids(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(text, false).map_err(|e| anyhow!("tokenize: {e}"))?.get_ids().to_vec())
}

/// `encode_chat` through the `tokenizers` crate. The usual prompt, whose content holds no control
/// token's text, is tokenized in one pass exactly as `encode_prompt` would. Otherwise the text is cut
/// at the control tokens that the template's markup holds (found by the same tokenizer, one stretch
/// of markup at a time), and the pieces between those cuts, content included, are tokenized as text.
fn hf_chat_ids(
    special: &Tokenizer,
    plain: &Tokenizer,
    control: &[u32],
    text: &str,
    literal: &[Range<usize>],
) -> Result<Vec<u32>> {
    let is_control = |id: &u32| control.binary_search(id).is_ok();
    let in_literal = |(start, end): (usize, usize)| literal.iter().any(|r| start < r.end && r.start < end);
    let whole = special.encode(text, false).map_err(|e| anyhow!("tokenize: {e}"))?;
    let pairs = || whole.get_ids().iter().zip(whole.get_offsets());
    if !pairs().any(|(id, &span)| is_control(id) && in_literal(span)) {
        return Ok(whole.get_ids().to_vec());
    }
    let mut ids = Vec::with_capacity(whole.len());
    let mut at = 0;
    let mut markup_start = 0;
    for r in literal.iter().cloned().chain(std::iter::once(text.len()..text.len())) {
        let markup = &text[markup_start..r.start];
        let enc = special.encode(markup, false).map_err(|e| anyhow!("tokenize: {e}"))?;
        for (id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()).filter(|(id, _)| is_control(id)) {
            ids.extend(hf_ids(plain, &text[at..markup_start + start])?);
            ids.push(*id);
            at = markup_start + end;
        }
        markup_start = r.end;
    }
    ids.extend(hf_ids(plain, &text[at..])?);
    Ok(ids)
}

/// Ids that end generation: the given ids (the GGUF's eos, eot and eom) and the control tokens whose
/// text ends a turn. Sorted, for `is_end_of_generation`.
fn end_of_generation(ids: &[Option<u32>], tokens: &[String], types: &[i32]) -> Vec<u32> {
    let mut eog: Vec<u32> = ids.iter().flatten().copied().collect();
    for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
        if ty == TOKEN_TYPE_CONTROL && END_OF_TURN_TEXTS.contains(&t.as_str()) {
            eog.push(i as u32);
        }
    }
    eog.sort_unstable();
    eog.dedup();
    eog
}

/// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| anyhow!("regex: {e}"))?
            .into())
    };
    // The GPT-2 regex inside ByteLevel is llama.cpp's default BPE regex.
    let gpt2 = || -> PreTokenizerWrapper { ByteLevel::new(false, false, true).into() };
    let bytes_only = || -> PreTokenizerWrapper { ByteLevel::new(false, false, false).into() };
    Ok(match pre {
        "default" | "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "olmo" | "jais" => gpt2(),
        // llama.cpp: `\p{N}` first (each digit alone), then the GPT-2 regex.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            Sequence::new(vec![Digits::new(true).into(), gpt2()]).into()
        }
        "llama3" | "llama-bpe" | "llama-v3" | "falcon3" | "pixtral" | "smaug-bpe" => {
            Sequence::new(vec![split(LLAMA3_REGEX)?, bytes_only()]).into()
        }
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" => {
            Sequence::new(vec![split(QWEN2_REGEX)?, bytes_only()]).into()
        }
        other => bail!("pre-tokenizer `{other}` is not supported yet"),
    })
}

/// GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest are shifted past 255.
fn byte_level_decoder() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            b as char
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("valid code point")
        };
        map.insert(c, b);
    }
    map
}

/// SentencePiece-style pieces: `▁` is a space and `<0xNN>` a raw byte.
fn sentencepiece_bytes(piece: &str) -> Vec<u8> {
    if let Some(hex) = piece.strip_prefix("<0x").and_then(|p| p.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    piece.replace('\u{2581}', " ").into_bytes()
}

/// Reads a GGUF file's metadata alone (for tools that only want the tokenizer, and the family check
/// at deployment creation). Buffered: unbuffered, the header is two small reads per vocabulary string
/// and merge (~200k system calls for SmolLM2).
pub fn gguf_metadata(path: &std::path::Path) -> Result<HashMap<String, Value>> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    Ok(candle_core::quantized::gguf_file::Content::read(&mut std::io::BufReader::new(f))?.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_round_trips_every_byte() {
        let map = byte_level_decoder();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'a'], b'a');
    }

    #[test]
    fn sentencepiece_pieces() {
        assert_eq!(sentencepiece_bytes("▁Hello"), b" Hello");
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
    }

    #[test]
    fn smollm_splits_digits_one_by_one() {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let pre = pre_tokenizer("smollm").unwrap();
        let mut s = PreTokenizedString::from("year 2024, ok");
        pre.pre_tokenize(&mut s).unwrap();
        let parts: Vec<String> = s
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(p, _, _)| p.to_string())
            .collect();
        assert_eq!(parts, vec!["year", "Ġ", "2", "0", "2", "4", ",", "Ġok"]);
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error() {
        assert!(pre_tokenizer("something-new").is_err());
    }
}
