//! `POST /v1/embeddings`: validate, tokenize each input (refusing, never cutting, what is over the
//! model's limit), hand the inputs to the deployment's engine (which batches them with other
//! requests'), and answer with one vector per input in OpenAI's shape.

use super::json::AppJson;
use super::openai::{Embedding, EmbeddingInput, EmbeddingList, EmbeddingRequest, EmbeddingUsage, EmbeddingVector};
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::loader::embedding::EmbeddingInfo;
use crate::loader::ModelKind;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;

/// OpenAI's limits: inputs per request, and tokens over all of them.
pub const MAX_INPUTS: usize = 2048;
pub const MAX_REQUEST_TOKENS: usize = 300_000;
/// The largest body the route reads: room for 2,048 inputs of 256 tokens of long words, or as token ids.
pub const MAX_BODY_BYTES: usize = 16 << 20;

fn bad(message: String, param: &str) -> ApiError {
    ApiError::invalid_request(message, Some(param))
}

/// What a request asks to embed, before tokenizing.
enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<i64>>),
}

impl Inputs {
    fn len(&self) -> usize {
        match self {
            Self::Texts(t) => t.len(),
            Self::Tokens(t) => t.len(),
        }
    }
}

/// The request's inputs as a list, refusing what OpenAI refuses: no input, an empty one, too many.
fn inputs(input: EmbeddingInput) -> Result<Inputs, ApiError> {
    let inputs = match input {
        EmbeddingInput::Text(t) => Inputs::Texts(vec![t]),
        EmbeddingInput::Texts(t) => Inputs::Texts(t),
        EmbeddingInput::Tokens(t) => Inputs::Tokens(vec![t]),
        EmbeddingInput::TokenLists(t) => Inputs::Tokens(t),
    };
    let n = inputs.len();
    if n == 0 {
        return Err(bad("'input' must not be an empty array.".into(), "input"));
    }
    if n > MAX_INPUTS {
        return Err(bad(format!("'input' holds {n} inputs; the maximum is {MAX_INPUTS} per request."), "input"));
    }
    let empty = match &inputs {
        Inputs::Texts(t) => t.iter().position(String::is_empty),
        Inputs::Tokens(t) => t.iter().position(Vec::is_empty),
    };
    if let Some(i) = empty {
        let what = if matches!(inputs, Inputs::Texts(_)) { "an empty string" } else { "an empty array of tokens" };
        let at = if n == 1 { String::new() } else { format!(" (input {i})") };
        return Err(bad(format!("'input' must not be {what}{at}."), "input"));
    }
    Ok(inputs)
}

/// Each input's token ids, special tokens included for text (as sentence-transformers encodes it);
/// token ids are the model's input as given. Anything over the model's limit is refused.
fn tokenize(inputs: Inputs, info: &EmbeddingInfo) -> Result<Vec<Vec<u32>>, ApiError> {
    let many = inputs.len() > 1;
    let which = |i: usize| if many { format!("Input {i}") } else { "The input".to_string() };
    let ids: Vec<Vec<u32>> = match inputs {
        Inputs::Texts(texts) => texts
            .iter()
            .map(|t| info.tokenize(t).map_err(|e| ApiError::internal(format!("{e:#}"))))
            .collect::<Result<_, _>>()?,
        Inputs::Tokens(lists) => lists
            .iter()
            .enumerate()
            .map(|(i, list)| {
                list.iter()
                    .map(|&id| match u32::try_from(id) {
                        Ok(id) if (id as usize) < info.vocab_size => Ok(id),
                        _ => Err(bad(
                            format!(
                                "{} holds token id {id}, outside the model's vocabulary of {}.",
                                which(i),
                                info.vocab_size
                            ),
                            "input",
                        )),
                    })
                    .collect()
            })
            .collect::<Result<_, _>>()?,
    };
    if let Some((i, long)) = ids.iter().enumerate().find(|(_, ids)| ids.len() > info.max_tokens) {
        return Err(bad(
            format!(
                "{} is {} tokens long; this model's maximum input is {} tokens. Please shorten it: \
                 inputs are never cut.",
                which(i),
                long.len(),
                info.max_tokens
            ),
            "input",
        )
        .with_code("context_length_exceeded"));
    }
    let total: usize = ids.iter().map(Vec::len).sum();
    if total > MAX_REQUEST_TOKENS {
        return Err(bad(
            format!("The inputs hold {total} tokens in all; the maximum is {MAX_REQUEST_TOKENS} per request."),
            "input",
        ));
    }
    Ok(ids)
}

/// Little-endian f32 bytes in base64, as OpenAI sends `encoding_format: "base64"`.
fn base64_vector(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `POST /v1/embeddings`
#[utoipa::path(post, path = "/v1/embeddings", operation_id = "createEmbedding", tag = "inference", security(("inference" = [])), request_body(content = EmbeddingRequest, examples(
        ("texts" = (value = json!({"model": "all-minilm-l6-v2", "input": ["A cat.", "A dog."]}))),
        ("base64" = (value = json!({"model": "all-minilm-l6-v2", "input": "A cat.", "encoding_format": "base64"}))),
    )), responses(
        (status = 200, description = "One vector per input", body = EmbeddingList),
        crate::api::openapi::OpenAiErrors,
))]
pub async fn embeddings(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<EmbeddingRequest>,
) -> Result<Json<EmbeddingList>, ApiError> {
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad(
                format!("Invalid 'encoding_format': '{other}'. Use 'float' or 'base64'."),
                "encoding_format",
            ))
        }
    };
    if let Some(d) = req.dimensions.filter(|d| *d < 1) {
        return Err(bad(format!("Invalid 'dimensions': {d}. It must be at least 1."), "dimensions"));
    }
    let inputs = inputs(req.input)?;
    let deployment = super::deployment_of_kind(&state, &caller, &req.model, ModelKind::Embeddings)?;

    let lease = deployment.acquire().await?;
    let engine =
        lease.embeddings().ok_or_else(|| ApiError::internal("an embedding deployment without an embedding engine"))?;
    let info = engine.info.clone();
    if let Some(d) = req.dimensions.filter(|d| *d as usize != info.dimensions) {
        return Err(bad(
            format!(
                "This model gives vectors of {} dimensions and cannot shorten them: 'dimensions' {d} is not supported.",
                info.dimensions
            ),
            "dimensions",
        ));
    }
    // Off the async runtime: thousands of inputs take a while to tokenize.
    let ids = tokio::task::spawn_blocking(move || tokenize(inputs, &info))
        .await
        .map_err(|e| ApiError::internal(format!("the tokenizer crashed: {e}")))??;
    let prompt_tokens: usize = ids.iter().map(Vec::len).sum();
    let pending = engine.embed(ids).map_err(|e| ApiError::engine(&req.model, e))?;
    let mut data = Vec::with_capacity(pending.len());
    for (index, rx) in pending.into_iter().enumerate() {
        let vector = rx
            .await
            .map_err(|_| ApiError::internal("the embedding engine dropped an input"))?
            .map_err(|e| ApiError::engine(&req.model, e))?;
        let embedding =
            if base64 { EmbeddingVector::Base64(base64_vector(&vector)) } else { EmbeddingVector::Float(vector) };
        data.push(Embedding { object: "embedding", index, embedding });
    }
    lease.deployment().usage.add_request(prompt_tokens, 0);
    state.deployments.metrics().tokens(deployment.name(), prompt_tokens, 0);
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: req.model,
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let text = base64_vector(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        assert_eq!(bytes, [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
    }

    #[test]
    fn empty_and_too_many_inputs_are_refused() {
        let refused = |input: EmbeddingInput| inputs(input).err().map(|e| (e.message, e.param));
        let e = refused(EmbeddingInput::Text(String::new())).unwrap();
        assert!(e.0.contains("empty string") && e.1.as_deref() == Some("input"), "{e:?}");
        assert!(refused(EmbeddingInput::Texts(vec![])).unwrap().0.contains("empty array"));
        assert!(refused(EmbeddingInput::Texts(vec!["a".into(), String::new()])).unwrap().0.contains("input 1"));
        assert!(refused(EmbeddingInput::TokenLists(vec![vec![1], vec![]]))
            .unwrap()
            .0
            .contains("empty array of tokens"));
        assert!(refused(EmbeddingInput::Texts(vec!["a".into(); MAX_INPUTS])).is_none());
        assert!(refused(EmbeddingInput::Texts(vec!["a".into(); MAX_INPUTS + 1])).unwrap().0.contains("2049 inputs"));
    }
}
