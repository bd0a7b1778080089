# probe, base64 and resample need only the standard library; decode and preprocess use OpenCV.
set(BLUELM_SOURCES probe.cpp base64.cpp resample.cpp resample_avx2.cpp decode.cpp preprocess.cpp)
set(BLUELM_TEST_SOURCES image_test.cpp)
