set(BLUELM_SOURCES isa.cpp threadpool.cpp)
set(BLUELM_TEST_SOURCES isa_test.cpp threadpool_test.cpp)
