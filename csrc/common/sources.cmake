set(BLUELM_SOURCES isa.cpp)
set(BLUELM_TEST_SOURCES isa_test.cpp)
