# probe, base64, resample and preprocess need only the standard library; decode calls libpng, libjpeg and libwebp.
set(BLUELM_SOURCES probe.cpp base64.cpp resample.cpp resample_avx2.cpp decode.cpp preprocess.cpp)
set(BLUELM_TEST_SOURCES image_test.cpp)
