//! The paged KV cache. Keys and values live in blocks of `BLOCK_SIZE` positions drawn from one pool
//! per replica; a sequence holds a table of its blocks instead of one contiguous buffer, so memory is
//! taken as sequences grow, given back whole when they end, and shared between sequences whose
//! prompts start alike (blocks.rs). Where the blocks' contents live is the device's business: on CPU,
//! `CpuKv` below; on CUDA, gpu.rs.

pub mod blocks;
#[cfg(feature = "cuda")]
pub mod gpu;

pub use blocks::{BlockId, BlockManager, BlockTable};

/// Positions per block: small enough that a sequence wastes at most 15 positions, big enough that a
/// block table stays short and a kernel reads whole blocks.
pub const BLOCK_SIZE: usize = 16;

/// The blocks' keys and values on CPU, per layer `[block][position in block][kv_dim]` (keys rotated).
///
/// The storage grows to the highest block in use rather than to the pool's size: the block manager
/// hands out low ids first, so memory follows the peak use, and a budget of 65k tokens costs nothing
/// until requests need it.
pub struct CpuKv {
    kv_dim: usize,
    pub layers: Vec<LayerKv>,
}

/// One layer's blocks: keys `[block][kv_dim][BLOCK_SIZE]` (transposed within a block, so that one
/// component of a block's keys is one vector: cpu::paged_attention) and values `[block][BLOCK_SIZE][kv_dim]`.
#[derive(Default)]
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

impl CpuKv {
    pub fn new(num_layers: usize, kv_dim: usize) -> Self {
        Self { kv_dim, layers: (0..num_layers).map(|_| LayerKv::default()).collect() }
    }

    /// Makes room for every block id below `blocks`.
    pub fn cover(&mut self, blocks: usize) {
        let floats = blocks * BLOCK_SIZE * self.kv_dim;
        for layer in &mut self.layers {
            if layer.k.len() < floats {
                layer.k.resize(floats, 0.0);
                layer.v.resize(floats, 0.0);
            }
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| (l.k.len() + l.v.len()) * std::mem::size_of::<f32>()).sum()
    }
}

/// Blocks in a pool of `max_kv_tokens` positions (at least one).
pub fn pool_blocks(max_kv_tokens: usize) -> usize {
    BlockManager::blocks_for(max_kv_tokens).max(1)
}

/// Where a replica's KV blocks live.
pub enum KvStore {
    Cpu(CpuKv),
    #[cfg(feature = "cuda")]
    Cuda(gpu::GpuKv),
}

/// Where position `pos` of a sequence with block table `blocks` lives: its slot in the pool.
#[inline]
pub fn slot(blocks: &[BlockId], pos: usize) -> usize {
    blocks[pos / BLOCK_SIZE] as usize * BLOCK_SIZE + pos % BLOCK_SIZE
}
