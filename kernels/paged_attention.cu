// Attention of single query rows over the paged KV cache (decode and prefill alike).
//
// Every query token is its own row: a prefill of n tokens is n rows sharing one block table, with
// context lengths start+1 .. start+n, so causality comes from the context lengths and there is no
// mask here. Row i attends to the keys at positions 0..context_lens[i]; position p lives in KV block
// block_tables[i][p / BLOCK_SIZE] at offset p % BLOCK_SIZE. Grouped-query attention: query head h
// reads KV head h / (num_heads / num_kv_heads).
//
// One thread block per (row, query head), PA_WARPS warps. Each warp takes groups of PA_KEYS_PER_ITER
// consecutive positions (a group never straddles a KV block) and keeps its own online softmax: a
// running max m, a running sum l of exp(score - m), and the running weighted sum of values, one
// f32 accumulator per head dimension spread across the lanes (lane j holds dims j, j+32, ...: the
// loads of one key row are coalesced). Loading a group of keys and values before using them keeps
// several loads in flight per warp, which is what hides the memory latency when there are few rows.
// At the end the warps' partial results are merged through shared memory with the usual rescaling
// by exp(m_w - max_w m_w). Scores, softmax and accumulation are f32 whatever the storage type.
#include "common.cuh"

#define PA_BLOCK_SIZE 16                                // positions per KV block (src/kv)
#define PA_MAX_HEAD_DIM 256                             // the Rust side checks head_dim <= this
#define PA_THREADS 256                                  // threads per thread block
#define PA_WARPS (PA_THREADS / WARP_SIZE)               // 8
#define PA_DIMS_PER_LANE (PA_MAX_HEAD_DIM / WARP_SIZE)  // 8
#define PA_KEYS_PER_ITER 4                              // must divide PA_BLOCK_SIZE

// out: [rows, num_heads, head_dim] contiguous. q: [rows, num_heads, head_dim], heads contiguous, rows
// `q_row_stride` elements apart. key_cache, value_cache: [num_blocks, PA_BLOCK_SIZE, num_kv_heads,
// head_dim] contiguous. block_tables: [rows, max_blocks] contiguous; context_lens: [rows].
// Context lengths past max_blocks * PA_BLOCK_SIZE are clamped to it and block ids at or past
// num_blocks are skipped, so bad tables give wrong numbers, never out-of-bounds reads. A row with
// context length 0 gets zeros.
// Launch: grid (rows, num_heads), block (PA_THREADS).
template <typename T>
__device__ __forceinline__ void paged_attention_impl(
    T* __restrict__ out, const T* __restrict__ q, const T* __restrict__ key_cache, const T* __restrict__ value_cache,
    const uint32_t* __restrict__ block_tables, const uint32_t* __restrict__ context_lens, float scale,
    uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim, uint32_t max_blocks, uint32_t num_blocks,
    uint64_t q_row_stride) {
    const uint32_t row = blockIdx.x;
    const uint32_t head = blockIdx.y;
    const uint32_t kv_head = head / (num_heads / num_kv_heads);
    const uint32_t lane = threadIdx.x % WARP_SIZE;
    const uint32_t warp = threadIdx.x / WARP_SIZE;

    // The query, pre-scaled, in registers: lane holds dims lane + 32 * j.
    const T* qh = q + row * q_row_stride + (size_t)head * head_dim;
    float qr[PA_DIMS_PER_LANE];
#pragma unroll
    for (int j = 0; j < PA_DIMS_PER_LANE; j++) {
        const uint32_t d = lane + WARP_SIZE * j;
        qr[j] = d < head_dim ? to_f32(qh[d]) * scale : 0.0f;
    }

    const uint32_t context_len = min(context_lens[row], max_blocks * PA_BLOCK_SIZE);
    const uint32_t* table = block_tables + (size_t)row * max_blocks;
    const size_t slot_stride = (size_t)num_kv_heads * head_dim;  // elements between consecutive slots

    float m = -INFINITY;  // running max of this warp's scores
    float l = 0.0f;       // running sum of exp(score - m)
    float acc[PA_DIMS_PER_LANE];
#pragma unroll
    for (int j = 0; j < PA_DIMS_PER_LANE; j++) acc[j] = 0.0f;

    for (uint32_t p0 = warp * PA_KEYS_PER_ITER; p0 < context_len; p0 += PA_WARPS * PA_KEYS_PER_ITER) {
        // Warp-uniform: every lane of the warp takes the same branches below.
        const uint32_t block = table[p0 / PA_BLOCK_SIZE];
        if (block >= num_blocks) continue;
        const size_t base = ((size_t)block * PA_BLOCK_SIZE + p0 % PA_BLOCK_SIZE) * slot_stride + (size_t)kv_head * head_dim;
        const T* k = key_cache + base;
        const T* v = value_cache + base;

        // Issue all loads of the group first, then reduce.
        float score[PA_KEYS_PER_ITER];
        float vr[PA_KEYS_PER_ITER][PA_DIMS_PER_LANE];
#pragma unroll
        for (int u = 0; u < PA_KEYS_PER_ITER; u++) {
            const bool valid = p0 + u < context_len;
            float partial = 0.0f;
#pragma unroll
            for (int j = 0; j < PA_DIMS_PER_LANE; j++) {
                const uint32_t d = lane + WARP_SIZE * j;
                const bool in = valid && d < head_dim;
                partial += in ? qr[j] * to_f32(k[u * slot_stride + d]) : 0.0f;
                vr[u][j] = in ? to_f32(v[u * slot_stride + d]) : 0.0f;
            }
            score[u] = partial;
        }
        float group_max = -INFINITY;
#pragma unroll
        for (int u = 0; u < PA_KEYS_PER_ITER; u++) {
            score[u] = p0 + u < context_len ? warp_sum(score[u]) : -INFINITY;
            group_max = fmaxf(group_max, score[u]);
        }

        // Online softmax update: rescale what we have to the new max, then add the group.
        const float m_new = fmaxf(m, group_max);
        const float correction = __expf(m - m_new);  // 0 on the first group (m = -inf)
        l *= correction;
#pragma unroll
        for (int j = 0; j < PA_DIMS_PER_LANE; j++) acc[j] *= correction;
#pragma unroll
        for (int u = 0; u < PA_KEYS_PER_ITER; u++) {
            const float weight = __expf(score[u] - m_new);  // 0 for the invalid (-inf) positions
            l += weight;
#pragma unroll
            for (int j = 0; j < PA_DIMS_PER_LANE; j++) acc[j] += weight * vr[u][j];
        }
        m = m_new;
    }

    // Merge the warps. A warp that saw no key has m = -inf and l = 0, and is left out.
    __shared__ float warp_m[PA_WARPS];
    __shared__ float warp_l[PA_WARPS];
    __shared__ float warp_acc[PA_WARPS][PA_MAX_HEAD_DIM];
    if (lane == 0) {
        warp_m[warp] = m;
        warp_l[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < PA_DIMS_PER_LANE; j++) {
        const uint32_t d = lane + WARP_SIZE * j;
        if (d < head_dim) warp_acc[warp][d] = acc[j];
    }
    __syncthreads();

    float m_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < PA_WARPS; w++) m_all = fmaxf(m_all, warp_m[w]);
    float weight[PA_WARPS];
    float l_all = 0.0f;
#pragma unroll
    for (int w = 0; w < PA_WARPS; w++) {
        weight[w] = warp_m[w] == -INFINITY ? 0.0f : __expf(warp_m[w] - m_all);
        l_all += weight[w] * warp_l[w];
    }
    const float inv_l = l_all > 0.0f ? 1.0f / l_all : 0.0f;

    T* o = out + ((size_t)row * num_heads + head) * head_dim;
    for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float r = 0.0f;
#pragma unroll
        for (int w = 0; w < PA_WARPS; w++) r += weight[w] * warp_acc[w][d];
        o[d] = from_f32<T>(r * inv_l);
    }
}

#define PAGED_ATTENTION_PARAMS(T)                                                                     \
    (T* __restrict__ out, const T* __restrict__ q, const T* __restrict__ key_cache,                   \
     const T* __restrict__ value_cache, const uint32_t* __restrict__ block_tables,                    \
     const uint32_t* __restrict__ context_lens, float scale, uint32_t num_heads, uint32_t num_kv_heads, \
     uint32_t head_dim, uint32_t max_blocks, uint32_t num_blocks, uint64_t q_row_stride)
WICK_INSTANTIATE(paged_attention, PAGED_ATTENTION_PARAMS,
                 (out, q, key_cache, value_cache, block_tables, context_lens, scale, num_heads, num_kv_heads,
                  head_dim, max_blocks, num_blocks, q_row_stride))
