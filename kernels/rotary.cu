// Rotary position embedding, in place on q or k (or on both at once, when they are adjacent heads of
// one fused qkv row). The CPU reference is `crate::arch::attention::Rope::apply`.
//
// Each head vector is split into head_dim/2 pairs (a, b), rotated by the angle of its row's position:
//   a' = a * cos - b * sin,   b' = a * sin + b * cos
// Interleaved style pairs (2i, 2i+1) (GPT-J, the original Llama weights); halves style pairs
// (i, i + head_dim/2) (the Hugging Face Llama layout). cos and sin come from f32 tables indexed by
// [position, i], built once per model.
#include "common.cuh"

// x: [rows, heads, head_dim], the heads of one row contiguous, rows `row_stride` elements apart (so
// that x may be a narrow of a wider row). positions: [rows]. cos, sin: [max_positions, head_dim/2].
// A position at or past max_positions leaves its row untouched (the Rust side cannot check device
// values; the engine never produces one).
// Launch: grid (pair blocks, min(rows, 65535)), block (256); one thread per pair.
template <typename T>
__device__ __forceinline__ void rotary_impl(T* __restrict__ x, const uint32_t* __restrict__ positions,
                                            const float* __restrict__ cos, const float* __restrict__ sin,
                                            uint32_t rows, uint32_t heads, uint32_t head_dim, uint64_t row_stride,
                                            uint32_t max_positions, uint32_t interleaved) {
    const uint32_t half = head_dim / 2;
    const uint32_t pairs_per_row = heads * half;
    for (size_t row = blockIdx.y; row < rows; row += gridDim.y) {
        const uint32_t pos = positions[row];
        if (pos >= max_positions) continue;
        const float* cos_row = cos + (size_t)pos * half;
        const float* sin_row = sin + (size_t)pos * half;
        T* xr = x + row * row_stride;
        for (uint32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < pairs_per_row; p += gridDim.x * blockDim.x) {
            const uint32_t head = p / half;
            const uint32_t i = p % half;
            T* xh = xr + (size_t)head * head_dim;
            // Halves: consecutive threads touch consecutive elements of both halves (coalesced).
            const uint32_t ia = interleaved ? 2 * i : i;
            const uint32_t ib = interleaved ? 2 * i + 1 : i + half;
            const float a = to_f32(xh[ia]);
            const float b = to_f32(xh[ib]);
            const float c = cos_row[i];
            const float s = sin_row[i];
            xh[ia] = from_f32<T>(a * c - b * s);
            xh[ib] = from_f32<T>(a * s + b * c);
        }
    }
}

#define ROTARY_PARAMS(T)                                                                                \
    (T* __restrict__ x, const uint32_t* __restrict__ positions, const float* __restrict__ cos,          \
     const float* __restrict__ sin, uint32_t rows, uint32_t heads, uint32_t head_dim, uint64_t row_stride, \
     uint32_t max_positions, uint32_t interleaved)
WICK_INSTANTIATE(rotary, ROTARY_PARAMS,
                 (x, positions, cos, sin, rows, heads, head_dim, row_stride, max_positions, interleaved))
