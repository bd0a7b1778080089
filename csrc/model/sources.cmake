# The model package (manifest.json + one 64-byte aligned weights file, memory-mapped); needs nlohmann/json.
set(BLUELM_SOURCES package.cpp config.cpp guard.cpp)
set(BLUELM_TEST_SOURCES package_test.cpp)
