set(BLUELM_SOURCES quant.cpp)
set(BLUELM_TEST_SOURCES quant_test.cpp)
