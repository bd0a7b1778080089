set(BLUELM_SOURCES quant.cpp quant_k.cpp)
set(BLUELM_TEST_SOURCES quant_test.cpp)
