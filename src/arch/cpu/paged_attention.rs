//! Causal softmax attention of a tile of queries over one KV head of one sequence's paged cache: the
//! inner loop of `arch::attention::attend`, one body compiled per kernel variant.
//!
//! Why tiles: a prefill of n tokens makes n²/2 (query, key) pairs per head. Taken one pair at a time
//! (a dispatched 64-float dot product, a horizontal sum and a scalar `exp` each) a 1,400-token
//! prompt spent 3.9 s of its 4.9 s here on two cores (BENCHMARKS.md). Here a KV block is loaded once
//! for every query of a tile: 16 keys' scores come out of one vector per step over the head's
//! components, and `exp` is vectorised.
//!
//! The key cache is kept transposed within a block (`[block][kv_dim][BLOCK_SIZE]`, crate::kv), so
//! that component c of a block's 16 keys is one 16-float vector. Values stay `[block][pos][kv_dim]`.
//!
//! Batch invariance: every query goes through the same operations whatever else is in its tile (a
//! decode step's tile is one row, a prefill's several, a prompt after a cached prefix starts
//! mid-way), so a token's result never depends on how its rows were grouped.

use super::isa::Variant;
use super::vector::{exp16, F32x16, Plain};
use crate::kv::{BlockId, BLOCK_SIZE};

/// Lanes of a score vector: the keys of one block.
const L: usize = BLOCK_SIZE;

/// One KV head of one sequence in one layer's cache.
pub struct HeadCache<'a> {
    /// The layer's keys, `[block][kv_dim][BLOCK_SIZE]`.
    pub k: &'a [f32],
    /// The layer's values, `[block][BLOCK_SIZE][kv_dim]`.
    pub v: &'a [f32],
    pub blocks: &'a [BlockId],
    pub kv_dim: usize,
    /// Where this head starts within `kv_dim`.
    pub offset: usize,
    pub head_dim: usize,
}

/// One query of a tile: its vector, the positions it sees (keys `first..visible`: `first` is 0 but
/// in a sliding window), and where its output goes (`head_dim` floats, overwritten).
pub struct Query<'a> {
    pub q: &'a [f32],
    pub first: usize,
    pub visible: usize,
    pub out: &'a mut [f32],
}

/// What raw scores `q . k` become before the softmax: times `scale`, then, with a cap,
/// `cap * tanh(s / cap)` (Gemma 2).
#[derive(Debug, Clone, Copy)]
pub struct Scores {
    pub scale: f32,
    pub softcap: Option<f32>,
}

/// Attends every query of `tile` over `cache`, scores made by `how`. `scores` is scratch.
pub fn attend_tile(
    variant: Variant,
    cache: &HeadCache<'_>,
    tile: &mut [Query<'_>],
    how: Scores,
    scores: &mut Vec<f32>,
) {
    assert!(cache.head_dim.is_multiple_of(4), "head_dim {} is not a multiple of 4", cache.head_dim);
    match variant {
        // SAFETY: `variant` is one this CPU runs (`isa`).
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { x86::tile_avx512(cache, tile, how, scores) },
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { x86::tile_avx2(cache, tile, how, scores) },
        _ => tile_body::<Plain>(cache, tile, how, scores),
    }
}

#[inline(always)]
fn tile_body<V: F32x16>(cache: &HeadCache<'_>, tile: &mut [Query<'_>], how: Scores, scores: &mut Vec<f32>) {
    let scale = how.scale;
    let longest = tile.iter().map(|q| q.visible).max().unwrap_or(0);
    let span = longest.div_ceil(L) * L;
    scores.clear();
    scores.resize(tile.len() * span, 0.0);

    // Queries go through the loops below in pairs where V is one register wide: two queries keep 8
    // sums in flight, enough to hide the latency of the fused multiply-adds; two AVX2 registers per
    // V already do. A query computes the same alone or paired.
    let group = if V::ONE_REGISTER { 2 } else { 1 };

    // Scores, a block at a time for the whole tile: s[j] = (q . k_j) * scale.
    for b in 0..longest.div_ceil(L) {
        let kt = &cache.k[(cache.blocks[b] as usize * cache.kv_dim + cache.offset) * L..][..cache.head_dim * L];
        let mut waiting: Option<usize> = None;
        let sees_block = |q: &Query<'_>| b * L < q.visible && (b + 1) * L > q.first;
        for i in (0..tile.len()).filter(|&i| sees_block(&tile[i])) {
            match waiting.take() {
                Some(h) => {
                    let [sh, si] = block_scores::<V, 2>([tile[h].q, tile[i].q], kt, scale);
                    sh.store(&mut scores[h * span + b * L..]);
                    si.store(&mut scores[i * span + b * L..]);
                }
                None if group == 2 => waiting = Some(i),
                None => {
                    let [si] = block_scores::<V, 1>([tile[i].q], kt, scale);
                    si.store(&mut scores[i * span + b * L..]);
                }
            }
        }
        if let Some(h) = waiting {
            let [sh] = block_scores::<V, 1>([tile[h].q], kt, scale);
            sh.store(&mut scores[h * span + b * L..]);
        }
    }

    // Softmax over each query's visible positions; weights replace the scores. Blocks wholly before
    // a window keep the zeros they started with.
    for (query, s) in tile.iter().zip(scores.chunks_exact_mut(span)) {
        let skipped = query.first / L * L;
        let s = &mut s[skipped..query.visible.div_ceil(L) * L];
        if let Some(cap) = how.softcap {
            super::rowwise::softcap_in_place(s, cap);
        }
        softmax(s, query.first - skipped, query.visible - skipped);
    }

    // Weighted values, again a block at a time: out += w_j * v_j, in the order of j. Paired queries
    // see the same number of the block's positions. From the tile's first window on: a query whose
    // window starts later adds zero weights there, which leaves its sums exactly as they were.
    for query in tile.iter_mut() {
        query.out.fill(0.0);
    }
    let earliest = tile.iter().map(|q| q.first).min().unwrap_or(0) / L;
    for b in earliest..longest.div_ceil(L) {
        let block = cache.blocks[b] as usize;
        let values = |j: usize| &cache.v[(block * L + j) * cache.kv_dim + cache.offset..][..cache.head_dim];
        let rows = |q: &Query<'_>| q.visible.saturating_sub(b * L).min(L);
        let mut i = 0;
        while i < tile.len() {
            let n = rows(&tile[i]);
            let weights = |q: usize| &scores[q * span + b * L..][..n];
            if group == 2 && i + 1 < tile.len() && rows(&tile[i + 1]) == n {
                let (this, next) = tile.split_at_mut(i + 1);
                add_weighted::<V, 2>([weights(i), weights(i + 1)], values, [&mut *this[i].out, &mut *next[0].out]);
                i += 2;
            } else {
                add_weighted::<V, 1>([weights(i)], values, [&mut *tile[i].out]);
                i += 1;
            }
        }
    }
}

/// The scores of N queries against a block's 16 keys (`kt` is `[head_dim][16]`): for each, four
/// independent sums over the components (c mod 4), added in a fixed order at the end.
#[inline(always)]
fn block_scores<V: F32x16, const N: usize>(qs: [&[f32]; N], kt: &[f32], scale: f32) -> [V; N] {
    let mut acc = [[V::zero(); 4]; N];
    for (c, kc) in kt.chunks_exact(4 * L).enumerate() {
        let k = [V::load(kc), V::load(&kc[L..]), V::load(&kc[2 * L..]), V::load(&kc[3 * L..])];
        for n in 0..N {
            let q: &[f32; 4] = qs[n][4 * c..4 * c + 4].try_into().unwrap();
            for u in 0..4 {
                acc[n][u] = V::splat(q[u]).mul_add(k[u], acc[n][u]);
            }
        }
    }
    let scale = V::splat(scale);
    // A loop, not `array::map`: that one is not always inlined, and out of line its vector ops are
    // calls (found in the AVX2 build's disassembly).
    let mut out = [V::zero(); N];
    for n in 0..N {
        let a = acc[n];
        out[n] = a[0].add(a[1]).add(a[2].add(a[3])).mul(scale);
    }
    out
}

/// `out[n] += w[n][j] * values(j)` for each j in order. Four 16-float chunks of each `out` at a time,
/// in registers across the j loop; a tail of fewer than 16 floats in plain arithmetic.
// One index runs over the weights of N queries and the rows of the block at once.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn add_weighted<'v, V: F32x16, const N: usize>(
    w: [&[f32]; N],
    values: impl Fn(usize) -> &'v [f32],
    out: [&mut [f32]; N],
) {
    let d = out[0].len();
    let rows = w[0].len();
    let mut c0 = 0;
    while c0 + 4 * L <= d {
        let mut acc = [[V::zero(); 4]; N];
        for n in 0..N {
            for u in 0..4 {
                acc[n][u] = V::load(&out[n][c0 + u * L..]);
            }
        }
        for j in 0..rows {
            let v = &values(j)[c0..c0 + 4 * L];
            let v = [V::load(v), V::load(&v[L..]), V::load(&v[2 * L..]), V::load(&v[3 * L..])];
            for n in 0..N {
                let wj = V::splat(w[n][j]);
                for u in 0..4 {
                    acc[n][u] = wj.mul_add(v[u], acc[n][u]);
                }
            }
        }
        for n in 0..N {
            for u in 0..4 {
                acc[n][u].store(&mut out[n][c0 + u * L..]);
            }
        }
        c0 += 4 * L;
    }
    while c0 + L <= d {
        for n in 0..N {
            let mut a = V::load(&out[n][c0..]);
            for j in 0..rows {
                a = V::splat(w[n][j]).mul_add(V::load(&values(j)[c0..]), a);
            }
            a.store(&mut out[n][c0..]);
        }
        c0 += L;
    }
    for n in 0..N {
        for c in c0..d {
            for j in 0..rows {
                out[n][c] += w[n][j] * values(j)[c];
            }
        }
    }
}

/// Turns `s[first..visible]` into softmax weights and zeroes the rest (`s` is whole blocks).
#[inline(always)]
fn softmax(s: &mut [f32], first: usize, visible: usize) {
    let seen = |j: usize| j >= first && j < visible;
    // The max lane by lane (exact in any order, and vectorised), then across the lanes.
    let mut maxes = [f32::NEG_INFINITY; L];
    for (b, chunk) in s.chunks_exact(L).enumerate() {
        for l in 0..L {
            if seen(b * L + l) {
                maxes[l] = maxes[l].max(chunk[l]);
            }
        }
    }
    let max = maxes.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sums = [0f32; L];
    for (b, chunk) in s.chunks_exact_mut(L).enumerate() {
        let mut x = [0f32; L];
        for l in 0..L {
            x[l] = chunk[l] - max;
        }
        let mut e = exp16(x);
        for (l, e) in e.iter_mut().enumerate() {
            if !seen(b * L + l) {
                *e = 0.0;
            }
        }
        for l in 0..L {
            sums[l] += e[l];
        }
        chunk.copy_from_slice(&e);
    }
    let sum = sums.iter().fold(0f32, |a, &x| a + x);
    for w in s.iter_mut() {
        *w /= sum;
    }
}

/// The same body, compiled for each instruction set.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::vector::lanes_x86::{Avx2, Avx512};
    use super::{HeadCache, Query, Scores};

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx2(cache: &HeadCache<'_>, tile: &mut [Query<'_>], how: Scores, scores: &mut Vec<f32>) {
        super::tile_body::<Avx2>(cache, tile, how, scores)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn tile_avx512(cache: &HeadCache<'_>, tile: &mut [Query<'_>], how: Scores, scores: &mut Vec<f32>) {
        super::tile_body::<Avx512>(cache, tile, how, scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values;

    /// One head's cache of `positions` keys and values over shuffled blocks, in the transposed key
    /// layout, with the plain key and value vectors kept for the reference.
    struct Fixture {
        k: Vec<f32>,
        v: Vec<f32>,
        blocks: Vec<BlockId>,
        keys: Vec<Vec<f32>>,
        values: Vec<Vec<f32>>,
    }

    /// A KV row of three heads; the fixture's is the middle one.
    fn fixture(positions: usize, d: usize) -> Fixture {
        let (kv_dim, offset) = (3 * d, d);
        let n_blocks = positions.div_ceil(L);
        // Blocks handed out backwards, with a spare one first: the kernel must follow the table.
        let blocks: Vec<BlockId> = (1..=n_blocks as BlockId).rev().collect();
        let mut k = vec![f32::NAN; (n_blocks + 1) * L * kv_dim];
        let mut v = vec![f32::NAN; (n_blocks + 1) * L * kv_dim];
        let keys: Vec<Vec<f32>> = (0..positions).map(|p| test_values(100 + p as u64, d)).collect();
        let values: Vec<Vec<f32>> = (0..positions).map(|p| test_values(900 + p as u64, d)).collect();
        for p in 0..positions {
            let (block, i) = (blocks[p / L] as usize, p % L);
            for c in 0..d {
                k[(block * kv_dim + offset + c) * L + i] = keys[p][c];
                v[(block * L + i) * kv_dim + offset + c] = values[p][c];
            }
        }
        // Unwritten positions of the last block hold NaN: they must never be read into a result.
        Fixture { k, v, blocks, keys, values }
    }

    fn naive(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], how: Scores) -> Vec<f64> {
        let s: Vec<f64> = keys
            .iter()
            .map(|k| k.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * how.scale as f64)
            .map(|s| how.softcap.map_or(s, |cap| cap as f64 * (s / cap as f64).tanh()))
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..q.len()).map(|c| e.iter().zip(values).map(|(w, v)| w / sum * v[c] as f64).sum()).collect()
    }

    #[test]
    fn every_variant_matches_naive_attention_and_ignores_its_tile() {
        // Head sizes that take each path of `add_weighted`: a tail only, 16 + a tail, 64, 64 + 16 + 4.
        for d in [12, 24, 64, 84] {
            check_head_dim(d);
        }
    }

    fn check_head_dim(d: usize) {
        let positions = 45; // three blocks, the last partly written
        let f = fixture(positions, d);
        let cache = HeadCache { k: &f.k, v: &f.v, blocks: &f.blocks, kv_dim: 3 * d, offset: d, head_dim: d };
        let scale = 1.0 / (d as f32).sqrt();
        let qs: Vec<Vec<f32>> = (0..6).map(|i| test_values(7 + i, d).iter().map(|x| x * 4.0).collect()).collect();
        // Pairs that see the same and different numbers of the last block's positions.
        let visible = [1, 16, 17, 30, 44, 45];
        // Causal, then sliding windows: within a block, at a block's edge, over a block boundary,
        // and whole blocks skipped; then soft-capped scores (a cap of 0.3 bends most of them).
        let cases = [([0; 6], None), ([0, 5, 1, 16, 27, 40], None), ([0, 5, 1, 16, 27, 40], Some(0.3))];
        for (first, softcap) in cases {
            let scale = Scores { scale, softcap };
            for variant in Variant::all_here() {
                let mut scores = Vec::new();
                // All six queries in one tile.
                let mut together = vec![vec![0f32; d]; 6];
                let mut tile: Vec<Query<'_>> = (0..6)
                    .zip(together.iter_mut())
                    .map(|(i, out)| Query { q: &qs[i], first: first[i], visible: visible[i], out })
                    .collect();
                attend_tile(variant, &cache, &mut tile, scale, &mut scores);
                for i in 0..6 {
                    let seen = first[i]..visible[i];
                    let want = naive(&qs[i], &f.keys[seen.clone()], &f.values[seen], scale);
                    if softcap.is_some() {
                        let uncapped = naive(
                            &qs[i],
                            &f.keys[first[i]..visible[i]],
                            &f.values[first[i]..visible[i]],
                            Scores { softcap: None, ..scale },
                        );
                        assert!(
                            visible[i] - first[i] == 1 || uncapped.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-3),
                            "the cap changes query {i}"
                        );
                    }
                    for (c, (g, w)) in together[i].iter().zip(&want).enumerate() {
                        assert!((*g as f64 - w).abs() < 1e-5, "{variant} d {d} query {i} c {c}: {g} vs {w}");
                    }
                    // Alone in its tile, bit for bit the same.
                    let mut alone = vec![0f32; d];
                    attend_tile(
                        variant,
                        &cache,
                        &mut [Query { q: &qs[i], first: first[i], visible: visible[i], out: &mut alone }],
                        scale,
                        &mut scores,
                    );
                    assert_eq!(alone, together[i], "{variant} d {d} query {i} alone");
                }
            }
        }
    }
}
