// FBT_HOST_DEVICE marks a function that also compiles as CUDA device code (nvcc), so the GPU runs
// the very code the CPU runs and the host tests check: the random numbers (rng.hpp) and the
// attention kernels' index math (attention_index.hpp).
#pragma once

#ifdef __CUDACC__
#define FBT_HOST_DEVICE __host__ __device__
#else
#define FBT_HOST_DEVICE
#endif
