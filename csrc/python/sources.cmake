set(BLUELM_PY_SOURCES module.cpp bind_common.cpp bind_dynres.cpp bind_image.cpp bind_tokenizer.cpp bind_engine.cpp bind_kernels.cpp)
