set(BLUELM_SOURCES unicode.cpp pretokenize.cpp tokenizer.cpp serialize.cpp chat.cpp)
set(BLUELM_TEST_SOURCES tokenizer_test.cpp unicode_test.cpp)
