//! A sentence encoder: candle-transformers' BERT, then the pooling and normalisation of a
//! sentence-transformers pipeline, over a padded batch of inputs of different lengths.
//!
//! Inputs are padded to the longest and the attention mask keeps every token from seeing padding,
//! and pooling counts only real tokens: an input's vector does not depend on what it was batched
//! with (to float rounding; `tests/embeddings.rs` and the tests below check it).

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The average of the input's token vectors (`pooling_mode_mean_tokens`).
    Mean,
    /// The first token's vector, `[CLS]` (`pooling_mode_cls_token`).
    Cls,
}

pub struct SentenceEncoder {
    bert: BertModel,
    pooling: Pooling,
    /// Scale each vector to unit length (a `Normalize` module after pooling).
    normalize: bool,
    /// What padding positions hold; never attended to, so any id in the vocabulary would do.
    pad_id: u32,
    device: Device,
}

impl SentenceEncoder {
    pub fn new(vb: VarBuilder, config: &Config, pooling: Pooling, normalize: bool) -> Result<Self> {
        let device = vb.device().clone();
        let bert = BertModel::load(vb, config)?;
        Ok(Self { bert, pooling, normalize, pad_id: config.pad_token_id as u32, device })
    }

    /// One vector per input (token ids, special tokens included), computed as one padded batch.
    pub fn embed(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        ensure!(!inputs.is_empty() && inputs.iter().all(|i| !i.is_empty()), "every input needs a token");
        let longest = inputs.iter().map(Vec::len).max().expect("not empty");
        let mut ids = Vec::with_capacity(inputs.len() * longest);
        let mut mask = Vec::with_capacity(inputs.len() * longest);
        for input in inputs {
            ids.extend_from_slice(input);
            ids.extend(std::iter::repeat_n(self.pad_id, longest - input.len()));
            mask.extend(std::iter::repeat_n(1u32, input.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - input.len()));
        }
        let shape = (inputs.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        // One segment: sentence-transformers encodes each input alone, as segment A.
        let token_types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &token_types, Some(&mask))?;
        let pooled = pool(&hidden, &mask, self.pooling)?;
        let out = if self.normalize { normalize(&pooled)? } else { pooled };
        Ok(out.to_dtype(DType::F32)?.to_vec2()?)
    }
}

/// `[batch, tokens, hidden]` to `[batch, hidden]`, counting only the tokens `mask` (`[batch,
/// tokens]`, 1 or 0) marks.
fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
    Ok(match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => {
            let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
            let sum = hidden.broadcast_mul(&mask)?.sum(1)?;
            // sentence-transformers clamps the count at 1e-9; every input here has a token.
            let count = mask.sum(1)?.clamp(1e-9, f64::INFINITY)?;
            sum.broadcast_div(&count)?
        }
    })
}

/// Each row divided by its length, as torch's `F.normalize` (which divides by at least 1e-12).
fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tiny_config() -> Config {
        Config {
            vocab_size: 40,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 32,
            max_position_embeddings: 64,
            ..Config::default()
        }
    }

    /// A BERT of random weights with every tensor a checkpoint has.
    fn tiny_encoder(pooling: Pooling, normalize: bool) -> SentenceEncoder {
        let c = tiny_config();
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![c.vocab_size, h]),
            ("embeddings.position_embeddings.weight".into(), vec![c.max_position_embeddings, h]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for (name, shape) in [
                ("attention.self.query", vec![h, h]),
                ("attention.self.key", vec![h, h]),
                ("attention.self.value", vec![h, h]),
                ("attention.output.dense", vec![h, h]),
                ("intermediate.dense", vec![i, h]),
                ("output.dense", vec![h, i]),
            ] {
                shapes.push((format!("{p}.{name}.bias"), vec![shape[0]]));
                shapes.push((format!("{p}.{name}.weight"), shape));
            }
            for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
                shapes.push((format!("{p}.{norm}.weight"), vec![h]));
                shapes.push((format!("{p}.{norm}.bias"), vec![h]));
            }
        }
        let tensors: HashMap<String, Tensor> = shapes
            .into_iter()
            .enumerate()
            .map(|(k, (name, shape))| {
                let n = shape.iter().product();
                let mut values = crate::arch::test_values(k as u64 + 1, n);
                if name.ends_with("LayerNorm.weight") {
                    values.iter_mut().for_each(|v| *v += 1.0);
                }
                (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
            })
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        SentenceEncoder::new(vb, &c, pooling, normalize).unwrap()
    }

    #[test]
    fn a_vector_is_the_same_alone_and_batched_with_longer_inputs() {
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let encoder = tiny_encoder(pooling, true);
            let inputs = vec![vec![1, 5, 9, 2], vec![1, 7, 3, 3, 3, 3, 8, 11, 30, 2], vec![1, 2]];
            let batched = encoder.embed(&inputs).unwrap();
            for (input, together) in inputs.iter().zip(&batched) {
                let alone = &encoder.embed(std::slice::from_ref(input)).unwrap()[0];
                let diff = crate::max_abs_diff(alone, together);
                assert!(diff < 1e-6, "{pooling:?}: {diff}");
            }
            let norm: f32 = batched[1].iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-6, "{norm}");
        }
    }

    #[test]
    fn mean_pooling_counts_only_real_tokens_and_normalize_gives_unit_rows() {
        // Two inputs of 3 and 1 tokens, hidden 2; padding holds values that must not count.
        let hidden =
            Tensor::new(&[[[1f32, 2.], [3., 4.], [5., 0.]], [[2., -2.], [100., 100.], [100., 100.]]], &Device::Cpu)
                .unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1], [1, 0, 0]], &Device::Cpu).unwrap();
        let mean: Vec<Vec<f32>> = pool(&hidden, &mask, Pooling::Mean).unwrap().to_vec2().unwrap();
        assert_eq!(mean, [[3., 2.], [2., -2.]]);
        let cls: Vec<Vec<f32>> = pool(&hidden, &mask, Pooling::Cls).unwrap().to_vec2().unwrap();
        assert_eq!(cls, [[1., 2.], [2., -2.]]);
        let unit: Vec<Vec<f32>> =
            normalize(&Tensor::new(&[[3f32, 4.], [0., 0.]], &Device::Cpu).unwrap()).unwrap().to_vec2().unwrap();
        assert_eq!(unit, [[0.6, 0.8], [0., 0.]]);
    }
}
