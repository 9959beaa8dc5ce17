// The gated MLP's activation: out = silu(gate) * up, with gate and up the two halves of one row of
// the fused gate_up projection ([rows, 2 * inter] -> [rows, inter]). Fusing it saves the two
// intermediate tensors (silu(gate), and the narrow copies) that separate candle ops would write.
#include "common.cuh"

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// gate_up: [rows, 2 * inter] contiguous; out: [rows, inter] contiguous.
// Launch: grid (column blocks, min(rows, 65535)), block (256); both grid dimensions are strided
// loops, so any grid covers any shape.
template <typename T>
__device__ __forceinline__ void silu_mul_impl(const T* __restrict__ gate_up, T* __restrict__ out, uint32_t rows,
                                              uint32_t inter) {
    for (size_t row = blockIdx.y; row < rows; row += gridDim.y) {
        const T* gate = gate_up + row * 2 * inter;
        const T* up = gate + inter;
        T* o = out + row * inter;
        for (uint32_t c = blockIdx.x * blockDim.x + threadIdx.x; c < inter; c += gridDim.x * blockDim.x) {
            o[c] = from_f32<T>(silu(to_f32(gate[c])) * to_f32(up[c]));
        }
    }
}

#define SILU_MUL_PARAMS(T) (const T* __restrict__ gate_up, T* __restrict__ out, uint32_t rows, uint32_t inter)
WICK_INSTANTIATE(silu_mul, SILU_MUL_PARAMS, (gate_up, out, rows, inter))
