set(BLUELM_SOURCES dynres.cpp)
set(BLUELM_TEST_SOURCES dynres_test.cpp)
