# The native engine: LLM (chunked prefill, INT8 KV cache), ViT + projector, sampling, sessions. Uses Eigen for
# the float matrix products and csrc/kernels for the quantized ones.
set(BLUELM_SOURCES ops.cpp attention.cpp attention_scalar.cpp attention_avx2.cpp attention_avx512.cpp linear.cpp llm.cpp vision.cpp anyres.cpp sampler.cpp engine.cpp)
set(BLUELM_TEST_SOURCES runtime_test.cpp attention_test.cpp)
