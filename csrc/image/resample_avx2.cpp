// AVX2 build of the resampler passes (see resample_passes.h); chosen at run time by resample.cpp.
#define BLUELM_PASS_NS avx2
#include "image/resample_passes.h"
