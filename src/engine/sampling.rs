//! Turning logits into the next token: logit_bias, the presence, frequency and repetition
//! penalties, temperature, top-k, top-p, min-p, and a seeded random draw. Temperature 0 is greedy.

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: Option<u64>,
    /// Not OpenAI's (vLLM's and Hugging Face's): a token already in the prompt or the output has its
    /// logit divided by this when positive, multiplied when negative. 1 is none.
    pub repetition_penalty: f32,
    /// Not OpenAI's (vLLM's and llama.cpp's): after temperature, tokens less likely than `min_p`
    /// times the likeliest are cut. 0 is none.
    pub min_p: f32,
    /// Not OpenAI's (vLLM's): the end-of-generation tokens are forbidden until this many tokens are
    /// generated.
    pub min_tokens: usize,
    /// Not OpenAI's (vLLM's and llama.cpp's): the end-of-generation tokens are forbidden throughout,
    /// so a choice runs to its token limit (what benchmark harnesses ask for).
    pub ignore_eos: bool,
    /// Report each sampled token's log-probability, with this many of the likeliest tokens'.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    /// OpenAI's defaults.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            repetition_penalty: 1.0,
            min_p: 0.0,
            min_tokens: 0,
            ignore_eos: false,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Whether the end-of-generation tokens are forbidden once `generated` tokens exist.
    pub fn forbids_end(&self, generated: usize) -> bool {
        self.ignore_eos || generated < self.min_tokens
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each token has been generated so far (for the penalties).
    counts: HashMap<u32, u32>,
    /// The prompt's distinct tokens, for the repetition penalty (empty when it is 1).
    prompt: HashSet<u32>,
}

impl Sampler {
    /// `stream` tells the choices of one request apart, so `n` choices with one seed differ from each
    /// other yet repeat across identical requests.
    pub fn new(params: SamplingParams, stream: u64, prompt: &[u32]) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed.wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            None => StdRng::from_entropy(),
        };
        let prompt = if params.repetition_penalty != 1.0 { prompt.iter().copied().collect() } else { HashSet::new() };
        Self { params, rng, counts: HashMap::new(), prompt }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        for &(id, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &count) in &self.counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
        if p.repetition_penalty != 1.0 {
            let seen = self.prompt.iter().chain(self.counts.keys().filter(|id| !self.prompt.contains(id)));
            for &id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
        let token = if p.temperature <= 0.0 { argmax(logits) } else { self.draw(logits) };
        *self.counts.entry(token).or_default() += 1;
        token
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp())).collect();
        let cut_k = p.top_k > 0 && p.top_k < probs.len();
        if cut_k || p.top_p < 1.0 {
            // Only the head of the distribution matters: partition before sorting it.
            let by_prob = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
            if cut_k {
                probs.select_nth_unstable_by(p.top_k - 1, by_prob);
                probs.truncate(p.top_k);
            }
            probs.sort_unstable_by(by_prob);
            if p.top_p < 1.0 {
                let total: f32 = probs.iter().map(|x| x.1).sum();
                let mut cumulative = 0.0;
                let keep = probs
                    .iter()
                    .position(|x| {
                        cumulative += x.1 / total;
                        cumulative >= p.top_p
                    })
                    .map_or(probs.len(), |i| i + 1);
                probs.truncate(keep);
            }
        }
        if p.min_p > 0.0 {
            // `max` was subtracted before exp: the likeliest token's weight is 1.
            probs.retain(|x| x.1 >= p.min_p);
        }
        let total: f32 = probs.iter().map(|x| x.1).sum();
        let mut target = self.rng.gen::<f32>() * total;
        for &(id, w) in &probs {
            target -= w;
            if target <= 0.0 {
                return id;
            }
        }
        probs.last().map_or(0, |x| x.0)
    }
}

/// `token`'s log-probability under `logits` (a log-softmax), and the `top` likeliest tokens' in
/// descending order (the lower id first on a tie). `Sampler::sample` leaves its `logits` with the
/// bias and penalties applied and nothing else, so this is the distribution OpenAI reports: after
/// logit_bias and penalties, before temperature, top-k, top-p and min-p.
pub fn token_logprobs(logits: &[f32], token: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
    let logprob = logits[token as usize] - log_sum;
    let top = top.min(logits.len());
    if top == 0 {
        return (logprob, Vec::new());
    }
    let mut best: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l - log_sum)).collect();
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if top < best.len() {
        best.select_nth_unstable_by(top - 1, order);
    }
    best.truncate(top);
    best.sort_unstable_by(order);
    (logprob, best)
}

/// Index of the largest logit; the lowest index wins a tie (as llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams { seed: Some(7), ..Default::default() };
        f(&mut p);
        p
    }

    #[test]
    fn greedy_takes_the_largest_and_the_first_of_ties() {
        let mut s = Sampler::new(params(|p| p.temperature = 0.0), 0, &[]);
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_choices_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |stream| {
            let mut s = Sampler::new(params(|_| {}), stream, &[]);
            (0..30).map(|_| s.sample(&mut logits.clone())).collect::<Vec<_>>()
        };
        assert_eq!(run(0), run(0));
        assert_ne!(run(0), run(1));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(params(|p| p.top_k = 1), 0, &[]);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.9, 0.5]), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 2 holds ~0.99 of the mass: top_p 0.5 must always pick it.
        let mut s = Sampler::new(params(|p| p.top_p = 0.5), 0, &[]);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.0, 0.0, 8.0, 0.0]), 2);
        }
    }

    #[test]
    fn logit_bias_can_force_and_forbid() {
        let mut s = Sampler::new(params(|p| p.logit_bias = vec![(3, 100.0)]), 0, &[]);
        assert_eq!(s.sample(&mut [5.0, 5.0, 5.0, 0.0]), 3);
        let mut s = Sampler::new(
            params(|p| {
                p.temperature = 0.0;
                p.logit_bias = vec![(0, -100.0)];
            }),
            0,
            &[],
        );
        assert_eq!(s.sample(&mut [5.0, 4.0]), 1);
    }

    #[test]
    fn penalties_discourage_repeats() {
        let mut s = Sampler::new(
            params(|p| {
                p.temperature = 0.0;
                p.frequency_penalty = 2.0;
            }),
            0,
            &[],
        );
        assert_eq!(s.sample(&mut [1.0, 0.5]), 0);
        // Token 0 now has count 1: 1.0 - 2.0 < 0.5.
        assert_eq!(s.sample(&mut [1.0, 0.5]), 1);
        let mut s = Sampler::new(
            params(|p| {
                p.temperature = 0.0;
                p.presence_penalty = 0.4;
            }),
            0,
            &[],
        );
        assert_eq!(s.sample(&mut [1.0, 0.7]), 0);
        assert_eq!(s.sample(&mut [1.0, 0.7]), 1);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut s = Sampler::new(params(|_| {}), 0, &[]);
        let logits = [0f32, (3f32).ln()]; // probabilities 1/4 and 3/4
        let ones = (0..4000).filter(|_| s.sample(&mut logits.clone()) == 1).count();
        assert!((2800..3200).contains(&ones), "{ones}");
    }

    #[test]
    fn repetition_penalty_reaches_the_prompt_and_the_output() {
        let greedy = |penalty| {
            params(|p| {
                p.temperature = 0.0;
                p.repetition_penalty = penalty;
            })
        };
        // Tokens 0 and 3 are in the prompt: 2.0 / 2.5 < 1.0.
        let mut s = Sampler::new(greedy(2.5), 0, &[0, 3, 0]);
        assert_eq!(s.sample(&mut [2.0, 1.0, -1.0]), 1);
        // Now 1 was generated too, and a negative logit is pushed further down: 3's -0.5 becomes
        // -1.25, below the unseen 2's -1.1.
        assert_eq!(s.sample(&mut [-1.0, -1.0, -1.1, -0.5]), 2);
        let mut s = Sampler::new(greedy(1.0), 0, &[0]);
        assert_eq!(s.sample(&mut [2.0, 1.0]), 0, "1 is no penalty");
    }

    #[test]
    fn min_p_cuts_the_unlikely_tail() {
        // Token 1 has e^-3 (~0.05) of token 0's weight: min_p 0.1 cuts it, 0.01 keeps it.
        let draws = |min_p| {
            let mut s = Sampler::new(params(|p| p.min_p = min_p), 0, &[]);
            (0..2000).filter(|_| s.sample(&mut [3.0, 0.0]) == 1).count()
        };
        assert_eq!(draws(0.1), 0);
        assert!(draws(0.01) > 40, "{}", draws(0.01));
    }

    #[test]
    fn logprobs_are_a_log_softmax_before_temperature() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let (lp, top) = token_logprobs(&logits, 2, 3);
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((lp - (2f32.exp() / total).ln()).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 3, 2], "descending, lower id first on a tie");
        assert_eq!(token_logprobs(&logits, 0, 0).1, []);
        // What `sample` leaves behind is the biased distribution, whatever the temperature.
        let biased = |temperature| {
            let mut s = Sampler::new(
                params(|p| {
                    p.temperature = temperature;
                    p.logit_bias = vec![(0, 5.0)];
                }),
                0,
                &[],
            );
            let mut l = logits;
            let token = s.sample(&mut l);
            token_logprobs(&l, token, 4).1
        };
        assert_eq!(biased(0.0), biased(1.7));
        assert_eq!(biased(0.0)[0].0, 0);
    }

    #[test]
    fn end_tokens_are_forbidden_until_min_tokens_and_always_with_ignore_eos() {
        let p = params(|p| p.min_tokens = 3);
        assert!(p.forbids_end(2) && !p.forbids_end(3));
        let p = params(|p| p.ignore_eos = true);
        assert!(p.forbids_end(1000));
        assert!(!params(|_| {}).forbids_end(0));
    }
}
