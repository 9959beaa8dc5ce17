//! Which KV block belongs to whom: allocation, sharing of prompt prefixes, and eviction.
//!
//! Every block holds `BLOCK_SIZE` positions. A sequence owns a `BlockTable`, its blocks in order.
//! Once a block is full its content is fixed, so it is registered under a hash of every token up to
//! its end (the hash chains through the blocks before it). A new sequence whose prompt starts with
//! the same tokens takes those blocks instead of computing them again: a reference count says how
//! many tables hold a block. A registered block that nobody holds any more keeps its content and
//! waits, least recently released first, until an allocation finds no free block and evicts it.
//!
//! The hash is 128 bits (two independently keyed SipHashes) so that a collision, which would hand a
//! sequence another prompt's keys, is out of reach in practice.

use super::BLOCK_SIZE;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};

pub type BlockId = u32;

/// One sequence's blocks, in position order.
#[derive(Debug, Default)]
pub struct BlockTable {
    pub blocks: Vec<BlockId>,
    /// How many leading blocks are full and their hashes known (registered or found registered).
    hashed: usize,
    /// The chain hash of block `hashed - 1`.
    last_hash: u128,
}

impl BlockTable {
    /// Positions the table has room for.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * BLOCK_SIZE
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompt tokens found in the cache instead of computed.
    pub hit_tokens: usize,
    /// Registered blocks evicted to make room.
    pub evictions: usize,
}

pub struct BlockManager {
    refs: Vec<u32>,
    /// Blocks with no content worth keeping, lowest id first so that storage that grows on demand
    /// (the CPU arena) stays as small as the peak use.
    free: BinaryHeap<Reverse<BlockId>>,
    by_hash: HashMap<u128, BlockId>,
    hash_of: Vec<Option<u128>>,
    /// Registered blocks nobody holds, by release time (oldest first).
    evictable: BTreeMap<u64, BlockId>,
    released_at: Vec<u64>,
    clock: u64,
    pub stats: PrefixStats,
}

impl BlockManager {
    pub fn new(num_blocks: usize) -> Self {
        let num_blocks = num_blocks.min(BlockId::MAX as usize);
        Self {
            refs: vec![0; num_blocks],
            free: (0..num_blocks as BlockId).map(Reverse).collect(),
            by_hash: HashMap::new(),
            hash_of: vec![None; num_blocks],
            evictable: BTreeMap::new(),
            released_at: vec![0; num_blocks],
            clock: 0,
            stats: PrefixStats::default(),
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks an allocation could take now: free ones and cached ones that nobody holds.
    pub fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    pub fn blocks_for(positions: usize) -> usize {
        positions.div_ceil(BLOCK_SIZE)
    }

    /// How many of `tokens`' leading tokens `start` would find in the cache now.
    pub fn cached_prefix(&self, tokens: &[u32]) -> usize {
        let mut hash = 0;
        let mut found = 0;
        for chunk in shareable(tokens) {
            hash = chain(hash, chunk);
            if !self.by_hash.contains_key(&hash) {
                break;
            }
            found += BLOCK_SIZE;
        }
        found
    }

    /// A table for a sequence of `tokens` that shares the longest cached run of its full blocks. At
    /// least the last token is left to compute, since its logits are what the step is for. Returns
    /// the table and how many positions are already in the cache.
    pub fn start(&mut self, tokens: &[u32]) -> (BlockTable, usize) {
        let mut table = BlockTable::default();
        for chunk in shareable(tokens) {
            let hash = chain(table.last_hash, chunk);
            let Some(&block) = self.by_hash.get(&hash) else { break };
            if self.refs[block as usize] == 0 {
                self.evictable.remove(&self.released_at[block as usize]);
            }
            self.refs[block as usize] += 1;
            table.blocks.push(block);
            table.hashed += 1;
            table.last_hash = hash;
        }
        let cached = table.capacity();
        self.stats.hit_tokens += cached;
        (table, cached)
    }

    /// Grows `table` to hold `positions`. When there are not enough blocks it takes none and
    /// returns false.
    pub fn reserve(&mut self, table: &mut BlockTable, positions: usize) -> bool {
        let needed = Self::blocks_for(positions).saturating_sub(table.blocks.len());
        if needed > self.available() {
            return false;
        }
        for _ in 0..needed {
            let block = self.take_unused().expect("counted as available");
            self.refs[block as usize] = 1;
            table.blocks.push(block);
        }
        true
    }

    /// Registers the table's blocks that `tokens` (the sequence's tokens now in the cache) have
    /// filled since the last call, so that later sequences can share them.
    pub fn register_full(&mut self, table: &mut BlockTable, tokens: &[u32]) {
        let full = (tokens.len() / BLOCK_SIZE).min(table.blocks.len());
        for i in table.hashed..full {
            let hash = chain(table.last_hash, &tokens[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE]);
            let block = table.blocks[i];
            // The same content may already be registered (two sequences computed it at once): the
            // first one stays registered, this copy is freed as an ordinary block when released.
            if let std::collections::hash_map::Entry::Vacant(e) = self.by_hash.entry(hash) {
                e.insert(block);
                self.hash_of[block as usize] = Some(hash);
            }
            table.hashed = i + 1;
            table.last_hash = hash;
        }
    }

    /// Gives the table's blocks back. Registered blocks keep their content until evicted; the
    /// table's last blocks are released first so that they are evicted before its prefix, which
    /// more sequences are likely to share.
    pub fn release(&mut self, table: BlockTable) {
        for &block in table.blocks.iter().rev() {
            let refs = &mut self.refs[block as usize];
            debug_assert!(*refs > 0, "block {block} released more often than taken");
            *refs -= 1;
            if *refs > 0 {
                continue;
            }
            if self.hash_of[block as usize].is_some() {
                self.clock += 1;
                self.released_at[block as usize] = self.clock;
                self.evictable.insert(self.clock, block);
            } else {
                self.free.push(Reverse(block));
            }
        }
    }

    /// A block with no holder: a free one, else the least recently released cached one.
    fn take_unused(&mut self) -> Option<BlockId> {
        if let Some(Reverse(block)) = self.free.pop() {
            return Some(block);
        }
        let (_, block) = self.evictable.pop_first()?;
        let hash = self.hash_of[block as usize].take().expect("evictable blocks are registered");
        self.by_hash.remove(&hash);
        self.stats.evictions += 1;
        Some(block)
    }

    /// One past the highest block id in use or cached: what storage must cover.
    pub fn high_water(&self) -> usize {
        self.refs.iter().zip(&self.hash_of).rposition(|(&r, h)| r > 0 || h.is_some()).map_or(0, |i| i + 1)
    }
}

/// The full blocks of `tokens` that may be shared: all but a last block that would contain the
/// final token.
fn shareable(tokens: &[u32]) -> std::slice::ChunksExact<'_, u32> {
    tokens[..tokens.len().saturating_sub(1)].chunks_exact(BLOCK_SIZE)
}

/// The hash of a block's tokens following the block whose hash is `parent` (0 for the first).
fn chain(parent: u128, tokens: &[u32]) -> u128 {
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        parent.hash(&mut h);
        tokens.hash(&mut h);
        h.finish() as u128
    };
    (half(0x5157_3f1a) << 64) | half(0x0b1e_c7ed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize, seed: u32) -> Vec<u32> {
        (0..n as u32).map(|i| i.wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// A sequence that computed `toks`: reserved and registered, as the engine does after a step.
    fn computed(m: &mut BlockManager, toks: &[u32]) -> BlockTable {
        let (mut t, _) = m.start(toks);
        assert!(m.reserve(&mut t, toks.len()));
        m.register_full(&mut t, toks);
        t
    }

    #[test]
    fn reserve_takes_only_what_fits() {
        let mut m = BlockManager::new(4);
        let mut t = BlockTable::default();
        assert!(m.reserve(&mut t, 17)); // two blocks
        assert_eq!(t.blocks.len(), 2);
        assert!(m.reserve(&mut t, 32)); // still two
        assert_eq!(m.available(), 2);
        assert!(!m.reserve(&mut t, 80)); // five: refused, nothing taken
        assert_eq!((t.blocks.len(), m.available()), (2, 2));
        m.release(t);
        assert_eq!(m.available(), 4);
    }

    #[test]
    fn a_shared_prompt_prefix_is_found_and_shared() {
        let mut m = BlockManager::new(16);
        let prompt = tokens(40, 7); // two full blocks and 8 more
        let a = computed(&mut m, &prompt);
        assert_eq!(m.available(), 13);

        // Same first 32 tokens, different rest: the two full blocks are shared.
        let mut other = prompt[..32].to_vec();
        other.extend(tokens(5, 99));
        assert_eq!(m.cached_prefix(&other), 32);
        let (mut b, cached) = m.start(&other);
        assert_eq!(cached, 32);
        assert_eq!(b.blocks, a.blocks[..2]);
        assert!(m.reserve(&mut b, other.len()));
        assert_eq!(m.available(), 12, "only b's third block is new");
        assert_eq!(m.stats.hit_tokens, 32);

        // A different first block shares nothing, even with the same second block.
        let mut shifted = tokens(16, 1000);
        shifted.extend_from_slice(&prompt[16..40]);
        assert_eq!(m.cached_prefix(&shifted), 0);

        // Shared blocks stay until their last holder lets go.
        m.release(a);
        assert_eq!(m.available(), 13);
        m.release(b);
        assert_eq!(m.available(), 16);
    }

    #[test]
    fn the_last_token_is_always_computed() {
        let mut m = BlockManager::new(8);
        let prompt = tokens(32, 3); // exactly two blocks
        let a = computed(&mut m, &prompt);
        // The same prompt again: only the first block is shared, the second holds the last token.
        let (b, cached) = m.start(&prompt);
        assert_eq!(cached, 16);
        assert_eq!(b.blocks, a.blocks[..1]);
    }

    #[test]
    fn released_prefixes_are_reused_until_evicted_oldest_first() {
        let mut m = BlockManager::new(4);
        let p1 = tokens(33, 1); // blocks 2 full + 1
        let p2 = tokens(33, 2);
        let a = computed(&mut m, &p1);
        m.release(a);
        // Still cached after release: a later identical prompt finds it.
        assert_eq!(m.cached_prefix(&p1), 32);
        // p2 needs 3 blocks: the 2 free ones, then one evicted, p1's tail released first.
        let b = computed(&mut m, &p2);
        assert_eq!(m.stats.evictions, 1);
        // p1's first block was released last, so it survived; its second did not.
        assert_eq!(m.cached_prefix(&p1), 16);
        m.release(b);
        assert_eq!(m.available(), 4);
    }

    #[test]
    fn growing_a_sequence_registers_blocks_as_they_fill() {
        let mut m = BlockManager::new(8);
        let mut seq = tokens(10, 5);
        let mut t = computed(&mut m, &seq);
        for step in 0..30 {
            seq.push(1000 + step);
            assert!(m.reserve(&mut t, seq.len()));
            m.register_full(&mut t, &seq);
        }
        // 40 tokens: two full blocks registered, the third partial one not.
        let mut probe = seq[..32].to_vec();
        probe.push(1);
        assert_eq!(m.cached_prefix(&probe), 32);
        assert_eq!(m.cached_prefix(&seq), 32);
        m.release(t);
    }

    #[test]
    fn high_water_follows_use() {
        let mut m = BlockManager::new(64);
        assert_eq!(m.high_water(), 0);
        let mut t = BlockTable::default();
        assert!(m.reserve(&mut t, 40));
        assert_eq!(m.high_water(), 3);
        m.release(t);
        assert_eq!(m.high_water(), 0, "unregistered blocks go back to the free list");
    }
}
