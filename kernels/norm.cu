// RMS normalisation: y = x / sqrt(mean(x^2) + eps) * weight, one row of `hidden` values at a time.
//
// One block per row: the row is read twice (sum of squares, then scale), the second time mostly from
// L1/L2. The sum is accumulated in f32 whatever the storage type, and the result is rounded to the
// storage type once, after the multiplication by the weight.
#include "common.cuh"

// x, y: [rows, hidden] contiguous; weight: [hidden]. Launch: grid (rows), block (multiple of 32).
template <typename T>
__device__ __forceinline__ void rms_norm_impl(const T* __restrict__ x, const T* __restrict__ weight,
                                              T* __restrict__ y, uint32_t hidden, float eps) {
    const size_t row = blockIdx.x;
    const T* xr = x + row * hidden;
    T* yr = y + row * hidden;

    float sum_sq = 0.0f;
    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        const float v = to_f32(xr[i]);
        sum_sq += v * v;
    }
    sum_sq = block_sum(sum_sq);
    const float inv_rms = rsqrtf(sum_sq / (float)hidden + eps);

    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        yr[i] = from_f32<T>(to_f32(xr[i]) * inv_rms * to_f32(weight[i]));
    }
}

#define RMS_NORM_PARAMS(T) \
    (const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y, uint32_t hidden, float eps)
WICK_INSTANTIATE(rms_norm, RMS_NORM_PARAMS, (x, weight, y, hidden, eps))
