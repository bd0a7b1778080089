set(BLUELM_SOURCES isa.cpp memory.cpp threadpool.cpp)
set(BLUELM_TEST_SOURCES isa_test.cpp memory_test.cpp threadpool_test.cpp)
