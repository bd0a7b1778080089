# The native engine: LLM (chunked prefill, INT8 KV cache), ViT + projector, sampling, sessions. Uses Eigen for
# the float matrix products and csrc/kernels for the quantized ones. The attention kernels and the KV cache need
# only the C++ standard library: they are all that BLUELM_KERNELS_ONLY (the aarch64 build run under qemu) keeps.
set(BLUELM_SOURCES attention.cpp attention_scalar.cpp attention_avx2.cpp attention_avx512.cpp attention_neon.cpp
    attention_dotprod.cpp kv_cache.cpp)
set(BLUELM_TEST_SOURCES attention_test.cpp)
if(NOT BLUELM_KERNELS_ONLY)
  list(APPEND BLUELM_SOURCES ops.cpp linear.cpp llm.cpp vision.cpp anyres.cpp image_block.cpp sampler.cpp engine.cpp)
  list(APPEND BLUELM_TEST_SOURCES runtime_test.cpp)
endif()
