//! Causal attention over the paged KV cache (crate::kv), with the rotary embedding (`arch::rope`)
//! applied on the way in, written over plain `f32` slices.
//!
//! Why not candle ops: a decode step attends each sequence over its own history, and sequences in a
//! batch have different lengths. Done with tensor ops that is a dozen small ops per sequence per layer,
//! and on CPU their fixed cost dominates (16 sequences x 30 layers x 12 ops is ~6k dispatches a step).
//! Here one pass per (sequence, KV head, tile of rows) does it (cpu::paged_attention), with no
//! allocation beyond the output and a worker's scratch. On CUDA our kernels do the same (src/cuda/);
//! this is their CPU reference.

pub use super::cpu::paged_attention::Scores;
use super::cpu::paged_attention::{attend_tile, HeadCache, Query};
use super::cpu::{isa, parallel_for, SharedOut};
use super::rope::Rope;
use crate::kv::{slot, BlockId, LayerKv, BLOCK_SIZE};

/// Shape of the attention of one layer.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// How one layer attends: the rope it rotates q and k by, its sliding window, if it has one (a
/// query at `p` sees keys `p - window + 1..=p`), and what its scores are scaled and capped by.
pub struct LayerAttention<'a> {
    pub rope: &'a Rope,
    pub window: Option<usize>,
    pub scores: Scores,
}

/// One sequence's slice of a step: `rows` new tokens at positions `start..start + rows`, its cache
/// in the pool's blocks `blocks` (room for at least `start + rows` positions).
pub struct SeqRows<'a> {
    pub blocks: &'a [BlockId],
    pub start: usize,
    pub rows: usize,
}

/// Query rows of one sequence that share a pass over its cache (with every query head of a KV head).
const ROWS_PER_TILE: usize = 4;

/// Attention for one layer over a flattened step, on the paged cache.
///
/// `qkv` holds one row per new token, `[q | k | v]` as the fused projection produced them, grouped by
/// sequence in the order of `seqs`. Rotates q and k, writes k and v into each sequence's blocks of
/// `layer`, and returns the attention output, one row of `q_dim` per token. This is also the CPU
/// reference of the CUDA kernels (`rotary`, `reshape_and_cache`, `paged_attention`).
pub fn attend(
    shape: AttnShape,
    how: &LayerAttention<'_>,
    qkv: &mut [f32],
    layer: &mut LayerKv,
    seqs: &[SeqRows<'_>],
) -> Vec<f32> {
    let (q_dim, kv_dim, d) = (shape.q_dim(), shape.kv_dim(), shape.head_dim);
    let rope = how.rope;
    let row_len = q_dim + 2 * kv_dim;

    // Rotate and write into the cache: cheap and sequential. Keys go in transposed within their
    // block (`[block][kv_dim][BLOCK_SIZE]`, see cpu::paged_attention), values as they are.
    let mut row = 0;
    for seq in seqs {
        assert!(seq.blocks.len() * BLOCK_SIZE >= seq.start + seq.rows, "a sequence's blocks are too few");
        for t in 0..seq.rows {
            let pos = seq.start + t;
            let r = &mut qkv[(row + t) * row_len..(row + t + 1) * row_len];
            for h in 0..shape.num_heads + shape.num_kv_heads {
                rope.apply(&mut r[h * d..(h + 1) * d], pos);
            }
            let (block, within) = (seq.blocks[pos / BLOCK_SIZE] as usize, pos % BLOCK_SIZE);
            let keys = &mut layer.k[block * BLOCK_SIZE * kv_dim..][..BLOCK_SIZE * kv_dim];
            for (c, &k) in r[q_dim..q_dim + kv_dim].iter().enumerate() {
                keys[c * BLOCK_SIZE + within] = k;
            }
            let at = slot(seq.blocks, pos) * kv_dim;
            layer.v[at..at + kv_dim].copy_from_slice(&r[q_dim + kv_dim..]);
        }
        row += seq.rows;
    }

    // One work item per (sequence, KV head, tile of rows): each writes its own rows of its own query
    // heads. A decode row gets an item per query head instead: with a KV group as one item, a
    // 1-stream step had 3 items for 2 threads. The latest rows of a prompt see the most keys; they
    // go first, so that the workers' last grabs are the short ones.
    let group = shape.num_heads / shape.num_kv_heads;
    let mut items = Vec::new();
    let mut first_row = 0;
    for (s, seq) in seqs.iter().enumerate() {
        for t0 in (0..seq.rows).step_by(ROWS_PER_TILE) {
            let rows = t0..seq.rows.min(t0 + ROWS_PER_TILE);
            for kv_head in 0..shape.num_kv_heads {
                let heads = kv_head * group..(kv_head + 1) * group;
                if seq.rows == 1 {
                    items.extend(heads.map(|h| (s, kv_head, h..h + 1, first_row + t0, rows.clone())));
                } else {
                    items.push((s, kv_head, heads, first_row + t0, rows.clone()));
                }
            }
        }
        first_row += seq.rows;
    }
    items.sort_by_key(|(s, _, _, _, rows)| std::cmp::Reverse(seqs[*s].start + rows.end));
    let qkv: &[f32] = qkv;
    let layer: &LayerKv = layer;
    let total_rows: usize = seqs.iter().map(|s| s.rows).sum();
    let mut out = vec![0f32; total_rows * q_dim];
    let shared = SharedOut::new(&mut out);
    let variant = isa::variant();
    parallel_for(items.len(), |range| {
        let (mut scores, mut tile) = (Vec::new(), Vec::new());
        for (s, kv_head, heads, tile_row, rows) in items[range].iter().cloned() {
            let seq = &seqs[s];
            let cache =
                HeadCache { k: &layer.k, v: &layer.v, blocks: seq.blocks, kv_dim, offset: kv_head * d, head_dim: d };
            tile.clear();
            for (i, t) in rows.enumerate() {
                let row = tile_row + i;
                let visible = seq.start + t + 1; // causal: keys 0..=pos
                let first = how.window.map_or(0, |w| visible.saturating_sub(w));
                for h in heads.clone() {
                    tile.push(Query {
                        q: &qkv[row * row_len + h * d..][..d],
                        first,
                        visible,
                        // SAFETY: (row, head) pairs are distinct across items, so are these parts.
                        out: unsafe { shared.part(row * q_dim + h * d, d) },
                    });
                }
            }
            attend_tile(variant, &cache, &mut tile, how.scores, &mut scores);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::rope::RopeStyle;

    /// Attention computed the obvious way, one query at a time over the full key list.
    fn naive(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>]) -> Vec<f32> {
        let d = q.len();
        let scale = 1.0 / (d as f32).sqrt();
        let scores: Vec<f32> = keys.iter().map(|k| k.iter().zip(q).map(|(a, b)| a * b).sum::<f32>() * scale).collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        (0..d).map(|i| exps.iter().zip(values).map(|(w, v)| w / sum * v[i]).sum()).collect()
    }

    /// A pool with the blocks of two sequences interleaved and out of order, as a busy pool hands
    /// them out: the paged path must read each sequence's own positions.
    #[test]
    fn paged_prefill_and_decode_match_naive_attention() {
        let shape = AttnShape { num_heads: 4, num_kv_heads: 2, head_dim: 8 };
        let rope = Rope::new(8, 10000.0, 64, RopeStyle::Halves, None);
        let how =
            LayerAttention { rope: &rope, window: None, scores: Scores { scale: 1.0 / (8f32).sqrt(), softcap: None } };
        let row_len = shape.q_dim() + 2 * shape.kv_dim();
        let mut rng = 1u64;
        let mut rand = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut kv = crate::kv::CpuKv::new(1, shape.kv_dim());
        kv.cover(6);
        let layer = &mut kv.layers[0];
        // A: a 20-token prefill over blocks 4 and 1. B: 18 positions already (blocks 5, 0), then 1.
        let (blocks_a, blocks_b): (&[BlockId], &[BlockId]) = (&[4, 1], &[5, 0]);
        let mut hist_b: Vec<f32> = (0..18 * row_len).map(|_| rand()).collect();
        let hist_b_orig = hist_b.clone();
        attend(shape, &how, &mut hist_b, layer, &[SeqRows { blocks: blocks_b, start: 0, rows: 18 }]);
        let mut qkv: Vec<f32> = (0..21 * row_len).map(|_| rand()).collect();
        let original = qkv.clone();
        let out = attend(
            shape,
            &how,
            &mut qkv,
            layer,
            &[SeqRows { blocks: blocks_a, start: 0, rows: 20 }, SeqRows { blocks: blocks_b, start: 18, rows: 1 }],
        );
        let d = shape.head_dim;
        let rot = |row: &[f32], off: usize, pos: usize| {
            let mut v = row[off..off + d].to_vec();
            rope.apply(&mut v, pos);
            v
        };
        let value = |row: &[f32], kv_head: usize| row[shape.q_dim() + shape.kv_dim() + kv_head * d..][..d].to_vec();
        // A's row 19 (position 19, in its second block), head 3 = kv head 1.
        let q = rot(&original[19 * row_len..], 3 * d, 19);
        let keys: Vec<Vec<f32>> = (0..20).map(|p| rot(&original[p * row_len..], shape.q_dim() + d, p)).collect();
        let values: Vec<Vec<f32>> = (0..20).map(|p| value(&original[p * row_len..], 1)).collect();
        let want = naive(&q, &keys, &values);
        let got = &out[19 * shape.q_dim() + 3 * d..][..d];
        assert!(want.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-5), "{want:?} vs {got:?}");
        // B's decode (row 20), head 0 = kv head 0, over its 18 earlier positions and itself.
        let b_row = |p: usize| if p < 18 { &hist_b_orig[p * row_len..] } else { &original[20 * row_len..] };
        let q = rot(b_row(18), 0, 18);
        let keys: Vec<Vec<f32>> = (0..19).map(|p| rot(b_row(p), shape.q_dim(), p)).collect();
        let values: Vec<Vec<f32>> = (0..19).map(|p| value(b_row(p), 0)).collect();
        let want = naive(&q, &keys, &values);
        let got = &out[20 * shape.q_dim()..][..d];
        assert!(want.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-5), "{want:?} vs {got:?}");
        // A causal prefill's first row sees only itself: the output is its own value vector.
        assert_eq!(&out[..d], value(&original, 0));
    }
}
