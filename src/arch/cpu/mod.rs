//! Our own CPU kernels, where candle's are missing or too slow for what the engine needs, and the
//! thread pool they run on. Each hot kernel has a variant per instruction set, chosen at run time
//! (`isa`).

pub mod conv1d;
pub mod isa;
pub mod paged_attention;
pub mod q4_1;
pub mod q8_0;
pub mod qblocks;
pub mod quant;
pub mod rowwise;
pub mod vector;

use std::ops::Range;

/// Runs `f` over `0..n` in chunks on candle's worker pool, the one its own matmuls use. Its workers
/// spin between calls: a decode step makes ~150 parallel calls, and waking sleeping rayon threads for
/// each cost more than the work at one or two sequences (measured: BENCHMARKS.md).
pub fn parallel_for(n: usize, f: impl Fn(Range<usize>) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(n, f)
}

/// Below this many floats of work a pass stays on the caller's thread: a parallel region (wake,
/// split, barrier) costs a few microseconds, what a core needs for ~10k floats of a light op.
pub const PARALLEL_ABOVE: usize = 16 * 1024;

/// Runs `f` over the rows `0..rows` of `width` floats each: in one call on this thread when the
/// work is small (a 1-stream decode step's norms and activations), in chunks on the pool when not.
pub fn parallel_rows(rows: usize, width: usize, f: impl Fn(Range<usize>) + Sync) {
    if rows < 2 || rows * width < PARALLEL_ABOVE {
        f(0..rows)
    } else {
        parallel_for(rows, f)
    }
}

/// The steps in each window when a sequence of `len` time steps is cut for the pool (the vocoders'
/// stages): at most 1,024, as many windows as a multiple of the threads, at least 64 steps. The
/// pool hands windows out as threads come free, and a third window for two threads kept one waiting
/// for the other (a third of the first stage of a short sentence). Each window recomputes its
/// neighbours' margins (up to 45 steps a side), so longer windows waste less: 1,024 against 512 was
/// 2% faster over the VITS voice (AMD EPYC Zen 3, avx2; 1,536 and 2,048 gained nothing more).
pub fn window_steps(len: usize) -> usize {
    let threads = candle_core::utils::get_num_threads().max(1);
    len.div_ceil(len.div_ceil(1024).next_multiple_of(threads)).max(64)
}

/// One output buffer written by many workers, each to its own disjoint part.
pub struct SharedOut<T> {
    ptr: *mut T,
    len: usize,
}

impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedOut<T> {}

// SAFETY: workers only ever touch disjoint ranges (the callers' contract of `part`).
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub fn new(buf: &mut [T]) -> Self {
        Self { ptr: buf.as_mut_ptr(), len: buf.len() }
    }

    /// A raw pointer to element `start`, with `len` elements from it inside the buffer, for a
    /// kernel that writes a strided part of it (rows of a block whose other steps are another
    /// worker's). What it writes through the pointer is under `part`'s contract.
    pub fn ptr_at(&self, start: usize, len: usize) -> *mut T {
        assert!(start + len <= self.len, "part {start}+{len} outside {}", self.len);
        // SAFETY: in bounds, checked above.
        unsafe { self.ptr.add(start) }
    }

    /// # Safety
    /// No two live parts may overlap, and the buffer must outlive them.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "part {start}+{len} outside {}", self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}
