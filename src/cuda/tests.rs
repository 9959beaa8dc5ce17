//! Each kernel against a naive CPU computation written here, on small pseudo-random inputs, in f32,
//! f16 and bf16.
//!
//! These tests only check something on a machine with a CUDA GPU: without one (no driver, or no
//! device) each prints that it was skipped and passes, so `cargo test --features cuda` stays green
//! on GPU-less machines and is a real check on a GPU machine.
//!
//! Tolerances: the reference computes in f32/f64 from the inputs as rounded to the tested dtype, so
//! what remains is the kernels' f32 arithmetic (`__expf` in the softmax) and the final rounding to
//! the storage type: |got - want| <= tol * (1 + |want|) with tol 1e-4 for f32, 5e-3 for f16 and
//! 1e-2 for bf16 (a bf16 rounding alone is up to 2^-9 relative). Copies are compared exactly.

use candle_core::{DType, Device, Tensor};

use super::{paged_attention, reshape_and_cache, rms_norm, rotary_inplace, silu_mul, BLOCK_SIZE};
use crate::arch::rope::{Rope, RopeStyle};
use crate::arch::test_values;

/// The dtypes every kernel is tested in, with their tolerance.
const DTYPES: [(DType, f32); 3] = [(DType::F32, 1e-4), (DType::F16, 5e-3), (DType::BF16, 1e-2)];

/// CUDA device 0, or None (and a line saying so) where there is none.
///
/// candle links cudarc to libcuda dynamically, so the test binary needs a libcuda.so.1 to start at
/// all: on a machine without a driver, put the toolchain's stub first on LD_LIBRARY_PATH
/// (`$CUDA_HOME/lib64/stubs`); its functions all fail, so opening the device errors and the tests
/// skip. A panic on the way is taken as "no device" too.
fn gpu(test: &str) -> Option<Device> {
    match std::panic::catch_unwind(|| Device::new_cuda(0)) {
        Ok(Ok(dev)) => Some(dev),
        Ok(Err(e)) => {
            let e = e.to_string();
            let e = e.lines().next().unwrap_or_default();
            eprintln!("{test}: skipped, no CUDA device ({e}); nothing was checked");
            None
        }
        Err(_) => {
            eprintln!("{test}: skipped, opening the CUDA device panicked; nothing was checked");
            None
        }
    }
}

/// `values` as a `dtype` tensor on `dev`, and the values as that dtype rounded them.
fn upload(values: &[f32], dims: &[usize], dtype: DType, dev: &Device) -> (Tensor, Vec<f32>) {
    let t = Tensor::from_slice(values, dims, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let rounded = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (t.to_device(dev).unwrap(), rounded)
}

fn upload_u32(values: &[u32], dev: &Device) -> Tensor {
    Tensor::from_slice(values, values.len(), dev).unwrap()
}

/// A tensor's values as f32, in row-major order of its (possibly strided) layout.
fn download(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}: element {i}: got {g}, want {w} (tol {tol})");
    }
}

/// 0..n in a pseudo-random order.
fn shuffled(seed: u64, n: usize) -> Vec<usize> {
    let keys = test_values(seed, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    order
}

#[test]
fn rms_norm_matches_reference() {
    let Some(dev) = gpu("rms_norm_matches_reference") else { return };
    let eps = 1e-5;
    for (rows, hidden) in [(1, 64), (5, 1000), (3, 4096), (2, 2055)] {
        for (dtype, tol) in DTYPES {
            let x: Vec<f32> =
                test_values(rows as u64 * 7 + hidden as u64, rows * hidden).iter().map(|v| v * 4.0).collect();
            let w: Vec<f32> = test_values(hidden as u64, hidden).iter().map(|v| 1.0 + v).collect();
            let (xt, x) = upload(&x, &[rows, hidden], dtype, &dev);
            let (wt, w) = upload(&w, &[hidden], dtype, &dev);
            let got = download(&rms_norm(&xt, &wt, eps).unwrap());
            let mut want = Vec::with_capacity(rows * hidden);
            for r in 0..rows {
                let row = &x[r * hidden..(r + 1) * hidden];
                let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / hidden as f32;
                let inv = 1.0 / (mean_sq + eps).sqrt();
                want.extend(row.iter().zip(&w).map(|(v, w)| v * inv * w));
            }
            assert_close(&format!("rms_norm {rows}x{hidden} {dtype:?}"), &got, &want, tol);
        }
    }
}

#[test]
fn silu_mul_matches_reference() {
    let Some(dev) = gpu("silu_mul_matches_reference") else { return };
    // 70000 rows: past the 65535 rows one grid dimension holds.
    for (rows, inter) in [(1, 16), (7, 300), (3, 5000), (70_000, 4)] {
        for (dtype, tol) in DTYPES {
            let v: Vec<f32> =
                test_values(rows as u64 + inter as u64, rows * 2 * inter).iter().map(|v| v * 8.0).collect();
            let (t, v) = upload(&v, &[rows, 2 * inter], dtype, &dev);
            let out = silu_mul(&t).unwrap();
            assert_eq!(out.dims(), [rows, inter]);
            let got = download(&out);
            let mut want = Vec::with_capacity(rows * inter);
            for r in 0..rows {
                let (gate, up) = v[r * 2 * inter..(r + 1) * 2 * inter].split_at(inter);
                want.extend(gate.iter().zip(up).map(|(g, u)| g / (1.0 + (-g).exp()) * u));
            }
            assert_close(&format!("silu_mul {rows}x{inter} {dtype:?}"), &got, &want, tol);
        }
    }
}

#[test]
fn rotary_matches_rope_apply() {
    let Some(dev) = gpu("rotary_matches_rope_apply") else { return };
    let (rows, heads, extra_heads, max_positions, theta) = (6, 5, 2, 50, 10_000.0f32);
    for head_dim in [64, 80, 128] {
        let half = head_dim / 2;
        // The tables as Rope::new builds them.
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for pos in 0..max_positions {
            for i in 0..half {
                let angle = pos as f64 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let cos_t = Tensor::from_slice(&cos, (max_positions, half), &dev).unwrap();
        let sin_t = Tensor::from_slice(&sin, (max_positions, half), &dev).unwrap();
        // The last row's position is past the tables: it must come back untouched.
        let positions: Vec<u32> = vec![0, 7, 49, 3, 3, max_positions as u32];
        let pos_t = upload_u32(&positions, &dev);
        for (style, interleaved) in [(RopeStyle::Interleaved, true), (RopeStyle::Halves, false)] {
            let rope = Rope::new(head_dim, theta, max_positions, style, None);
            for (dtype, tol) in DTYPES {
                // x is the first `heads` heads of wider rows, as q and k are of the fused qkv rows.
                let width = heads + extra_heads;
                let v = test_values(head_dim as u64 * 3 + u64::from(interleaved), rows * width * head_dim);
                let (base, v) = upload(&v, &[rows, width, head_dim], dtype, &dev);
                let x = base.narrow(1, 0, heads).unwrap();
                rotary_inplace(&x, &pos_t, &cos_t, &sin_t, interleaved).unwrap();
                let got = download(&base);
                let mut want = v.clone();
                for (r, &pos) in positions.iter().enumerate() {
                    if (pos as usize) < max_positions {
                        for h in 0..heads {
                            let at = (r * width + h) * head_dim;
                            rope.apply(&mut want[at..at + head_dim], pos as usize);
                        }
                    }
                }
                assert_close(&format!("rotary d{head_dim} {style:?} {dtype:?}"), &got, &want, tol);
            }
        }
    }
}

#[test]
fn reshape_and_cache_writes_the_slots() {
    let Some(dev) = gpu("reshape_and_cache_writes_the_slots") else { return };
    let (num_blocks, kv_heads, head_dim, tokens) = (7, 2, 32, 9);
    let kv_dim = kv_heads * head_dim;
    let num_slots = num_blocks * BLOCK_SIZE;
    // Distinct slots in shuffled blocks; token 4 is padding.
    let mut slots: Vec<u32> = shuffled(11, num_slots)[..tokens].iter().map(|&s| s as u32).collect();
    slots[4] = u32::MAX;
    let slots_t = upload_u32(&slots, &dev);
    for (dtype, _) in DTYPES {
        let cache_dims = [num_blocks, BLOCK_SIZE, kv_heads, head_dim];
        let (key_cache, k_init) = upload(&test_values(1, num_slots * kv_dim), &cache_dims, dtype, &dev);
        let (value_cache, v_init) = upload(&test_values(2, num_slots * kv_dim), &cache_dims, dtype, &dev);
        // Keys and values as the k and v parts of fused [q | k | v] rows (q as wide as k here).
        let (qkv, rows) = upload(&test_values(3, tokens * 3 * kv_dim), &[tokens, 3 * kv_dim], dtype, &dev);
        let key = qkv.narrow(1, kv_dim, kv_dim).unwrap();
        // (Reshaping a strided narrow copies it: value is contiguous and 3-d, key strided and 2-d.)
        let value = qkv.narrow(1, 2 * kv_dim, kv_dim).unwrap().reshape((tokens, kv_heads, head_dim)).unwrap();
        reshape_and_cache(&key, &value, &key_cache, &value_cache, &slots_t).unwrap();
        let (mut k_want, mut v_want) = (k_init, v_init);
        for (t, &slot) in slots.iter().enumerate() {
            if slot == u32::MAX {
                continue;
            }
            let s = slot as usize * kv_dim;
            let row = &rows[t * 3 * kv_dim..(t + 1) * 3 * kv_dim];
            k_want[s..s + kv_dim].copy_from_slice(&row[kv_dim..2 * kv_dim]);
            v_want[s..s + kv_dim].copy_from_slice(&row[2 * kv_dim..]);
        }
        assert_close(&format!("key_cache {dtype:?}"), &download(&key_cache), &k_want, 0.0);
        assert_close(&format!("value_cache {dtype:?}"), &download(&value_cache), &v_want, 0.0);
    }
}

/// One attention shape and the sequences of one step: `(start, n)` is n query rows at positions
/// start..start+n of a sequence whose cache holds positions 0..start+n.
struct AttnCase {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    seqs: &'static [(usize, usize)],
}

const ATTN_CASES: &[AttnCase] = &[
    // Decode of four sequences (contexts 1, 17, 40, 201), GQA 2:1.
    AttnCase { heads: 4, kv_heads: 2, head_dim: 64, seqs: &[(0, 1), (16, 1), (39, 1), (200, 1)] },
    // A prefill chunk from position 5 next to a fresh prefill and a decode, MQA (8 heads, 1 kv head).
    AttnCase { heads: 8, kv_heads: 1, head_dim: 128, seqs: &[(5, 7), (0, 20), (33, 1)] },
    // head_dim not a multiple of 32, plain multi-head attention.
    AttnCase { heads: 6, kv_heads: 6, head_dim: 80, seqs: &[(30, 3)] },
    // The largest head_dim, a long prefill.
    AttnCase { heads: 2, kv_heads: 1, head_dim: 256, seqs: &[(0, 33), (90, 2)] },
];

#[test]
fn paged_attention_matches_reference() {
    let Some(dev) = gpu("paged_attention_matches_reference") else { return };
    for (ci, case) in ATTN_CASES.iter().enumerate() {
        let AttnCase { heads, kv_heads, head_dim, seqs } = *case;
        let group = heads / kv_heads;
        let kv_dim = kv_heads * head_dim;
        // Each sequence gets its blocks from a shuffled pool with spares (filled with values that
        // must not be read).
        let needed: Vec<usize> = seqs.iter().map(|&(s, n)| (s + n).div_ceil(BLOCK_SIZE)).collect();
        let num_blocks = needed.iter().sum::<usize>() + 3;
        let max_blocks = *needed.iter().max().unwrap();
        let pool = shuffled(ci as u64 + 100, num_blocks);
        let mut tables: Vec<Vec<u32>> = Vec::new();
        let mut next = 0;
        for &n in &needed {
            let mut t: Vec<u32> = pool[next..next + n].iter().map(|&b| b as u32).collect();
            t.resize(max_blocks, u32::MAX); // past the context: never read
            tables.push(t);
            next += n;
        }
        // One row per query token: its sequence's table and context length.
        let (mut row_tables, mut context_lens) = (Vec::new(), Vec::new());
        for (si, &(start, n)) in seqs.iter().enumerate() {
            for j in 0..n {
                row_tables.extend_from_slice(&tables[si]);
                context_lens.push((start + j + 1) as u32);
            }
        }
        let rows = context_lens.len();
        let tables_t = Tensor::from_slice(&row_tables, (rows, max_blocks), &dev).unwrap();
        let lens_t = upload_u32(&context_lens, &dev);
        let scale = 1.0 / (head_dim as f32).sqrt();

        for (dtype, tol) in DTYPES {
            let cache_dims = [num_blocks, BLOCK_SIZE, kv_heads, head_dim];
            let n_cache = num_blocks * BLOCK_SIZE * kv_dim;
            let (key_cache, k) = upload(&test_values(ci as u64 * 3 + 1, n_cache), &cache_dims, dtype, &dev);
            let (value_cache, v) = upload(&test_values(ci as u64 * 3 + 2, n_cache), &cache_dims, dtype, &dev);
            // q as the first heads of wider (fused qkv) rows; large enough for a peaked softmax.
            let width = heads + 2 * kv_heads;
            let qv: Vec<f32> =
                test_values(ci as u64 * 3 + 3, rows * width * head_dim).iter().map(|x| x * 8.0).collect();
            let (qkv, qv) = upload(&qv, &[rows, width, head_dim], dtype, &dev);
            let q = qkv.narrow(1, 0, heads).unwrap();

            let out = paged_attention(&q, &key_cache, &value_cache, &tables_t, &lens_t, scale).unwrap();
            assert_eq!(out.dims(), [rows, heads, head_dim]);
            let got = download(&out);

            let mut want = vec![0f32; rows * heads * head_dim];
            for r in 0..rows {
                let table = &row_tables[r * max_blocks..(r + 1) * max_blocks];
                for h in 0..heads {
                    let qh = &qv[(r * width + h) * head_dim..][..head_dim];
                    let kvh = h / group;
                    let at = |p: usize| {
                        let slot = table[p / BLOCK_SIZE] as usize * BLOCK_SIZE + p % BLOCK_SIZE;
                        (slot * kv_heads + kvh) * head_dim
                    };
                    let scores: Vec<f64> = (0..context_lens[r] as usize)
                        .map(|p| {
                            let kp = &k[at(p)..][..head_dim];
                            qh.iter().zip(kp).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>()
                                * f64::from(scale)
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    let o = &mut want[(r * heads + h) * head_dim..][..head_dim];
                    for (p, w) in weights.iter().enumerate() {
                        let vp = &v[at(p)..][..head_dim];
                        for (o, x) in o.iter_mut().zip(vp) {
                            *o += (w / total * f64::from(*x)) as f32;
                        }
                    }
                }
            }
            let what = format!("paged_attention case {ci} (h{heads} kv{kv_heads} d{head_dim}) {dtype:?}");
            assert_close(&what, &got, &want, tol);
        }
    }
}

#[test]
fn paged_attention_of_an_empty_context_is_zero() {
    let Some(dev) = gpu("paged_attention_of_an_empty_context_is_zero") else { return };
    let (key_cache, _) = upload(&test_values(5, 2 * BLOCK_SIZE * 32), &[2, BLOCK_SIZE, 1, 32], DType::F32, &dev);
    let value_cache = key_cache.clone();
    let (q, _) = upload(&test_values(6, 2 * 32), &[1, 2, 32], DType::F32, &dev);
    let tables = Tensor::from_slice(&[1u32], (1, 1), &dev).unwrap();
    let out = paged_attention(&q, &key_cache, &value_cache, &tables, &upload_u32(&[0], &dev), 0.1).unwrap();
    assert_eq!(download(&out), vec![0.0; 64]);
}

/// Wrong shapes and dtypes are refused before anything is launched; runs wherever a CUDA device
/// opens (the checks come after the device check).
#[test]
fn bad_arguments_are_refused() {
    let Some(dev) = gpu("bad_arguments_are_refused") else { return };
    let x = Tensor::zeros((2, 8), DType::F32, &dev).unwrap();
    assert!(rms_norm(&x, &Tensor::zeros(7, DType::F32, &dev).unwrap(), 1e-5).is_err());
    assert!(rms_norm(&x, &Tensor::zeros(8, DType::BF16, &dev).unwrap(), 1e-5).is_err());
    assert!(silu_mul(&Tensor::zeros((2, 7), DType::F32, &dev).unwrap()).is_err());
    let cpu = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(rms_norm(&cpu, &Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap(), 1e-5).is_err());
    let q = Tensor::zeros((1, 3, 32), DType::F32, &dev).unwrap();
    let cache = Tensor::zeros((1, BLOCK_SIZE, 2, 32), DType::F32, &dev).unwrap();
    let tables = Tensor::zeros((1, 1), DType::U32, &dev).unwrap();
    let lens = Tensor::zeros(1, DType::U32, &dev).unwrap();
    // 3 query heads for 2 kv heads.
    assert!(paged_attention(&q, &cache, &cache, &tables, &lens, 1.0).is_err());
}
