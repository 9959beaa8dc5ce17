// Writes the new tokens' keys (or values) into the paged KV cache.
//
// The cache of one layer is [num_blocks, BLOCK_SIZE, num_kv_heads, head_dim] and a token's slot is
// block_id * BLOCK_SIZE + offset_in_block, so slot `s` is simply row `s` of a [num_slots, kv_dim]
// matrix: the "reshape" is free and the kernel is a row scatter. Keys and values are written by two
// launches of this one kernel (the Rust op is in-place on one cache at a time).
#include "common.cuh"

// src: [tokens, kv_dim], each row contiguous, rows `src_row_stride` elements apart (so that src may
// be a narrow of the fused qkv rows). cache: [num_slots, kv_dim] contiguous. A slot at or past
// num_slots (u32::MAX marks padding) is skipped.
// Launch: grid (min(tokens, 65535)), block (a multiple of 32); one block per token, strided.
template <typename T>
__device__ __forceinline__ void reshape_and_cache_impl(const T* __restrict__ src, T* __restrict__ cache,
                                                       const uint32_t* __restrict__ slot_mapping, uint32_t tokens,
                                                       uint32_t kv_dim, uint64_t src_row_stride, uint64_t num_slots) {
    for (size_t token = blockIdx.x; token < tokens; token += gridDim.x) {
        const uint32_t slot = slot_mapping[token];
        if (slot >= num_slots) continue;
        const T* s = src + token * src_row_stride;
        T* d = cache + (size_t)slot * kv_dim;
        for (uint32_t i = threadIdx.x; i < kv_dim; i += blockDim.x) d[i] = s[i];
    }
}

#define RESHAPE_AND_CACHE_PARAMS(T)                                                                  \
    (const T* __restrict__ src, T* __restrict__ cache, const uint32_t* __restrict__ slot_mapping,    \
     uint32_t tokens, uint32_t kv_dim, uint64_t src_row_stride, uint64_t num_slots)
WICK_INSTANTIATE(reshape_and_cache, RESHAPE_AND_CACHE_PARAMS,
                 (src, cache, slot_mapping, tokens, kv_dim, src_row_stride, num_slots))
