# One driver, the panel packer, the down-sampler, and one function table per instruction set (per-file flags by
# suffix, see cmake/BluelmIsa.cmake). kernels_simde_test.cpp compiles kernels_avx512.cpp again through SIMDe so
# the AVX-512 source is tested on CPUs without AVX-512 (only when the SIMDe headers are found).
set(BLUELM_SOURCES kernels.cpp pack.cpp downsample.cpp roofline.cpp roofline_mix.cpp kernels_scalar.cpp
    kernels_avx2.cpp kquant_avx2.cpp kquant_avx512.cpp
    kernels_avx512.cpp kernels_neon.cpp kernels_dotprod.cpp)
set(BLUELM_TEST_SOURCES kernels_test.cpp)
if(BLUELM_HAVE_SIMDE)
  list(APPEND BLUELM_TEST_SOURCES kernels_simde_test.cpp)
endif()
