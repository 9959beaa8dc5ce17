// Shared helpers for Wick's CUDA kernels: dtype conversion and warp/block reductions.
//
// Every kernel stores f32, f16 or bf16 but computes in f32: the conversions below are the only place
// that knows about the storage types, so each kernel is written once as a template over `T` and
// instantiated three times with `extern "C"` names `<kernel>_<dtype>` (the names candle's
// `kernel_name::<T>` builds: f32, f16, bf16).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

// ---- storage type <-> f32 -------------------------------------------------------------------------

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// ---- reductions ----------------------------------------------------------------------------------

// Sum over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// Uses 32 floats of shared memory; safe to call repeatedly (it synchronises before reusing them).
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int num_warps = blockDim.x / WARP_SIZE;
    v = warp_sum(v);
    __syncthreads();  // a previous call may still be reading `partial`
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < num_warps ? partial[lane] : 0.0f;
    return warp_sum(v);
}

// Instantiates the `extern "C"` kernels `NAME_f32`, `NAME_f16` and `NAME_bf16` from the device
// template `NAME_impl<T>`. PARAMS is a function-like macro giving the parameter list for a storage
// type T; ARGS is the parenthesised list of the parameter names. `extern "C"` keeps the names
// unmangled so that Rust can look them up in the PTX module.
#define WICK_INSTANTIATE(NAME, PARAMS, ARGS)                                                           \
    extern "C" __global__ void NAME##_f32 PARAMS(float) { NAME##_impl<float> ARGS; }                   \
    extern "C" __global__ void NAME##_f16 PARAMS(__half) { NAME##_impl<__half> ARGS; }                 \
    extern "C" __global__ void NAME##_bf16 PARAMS(__nv_bfloat16) { NAME##_impl<__nv_bfloat16> ARGS; }
