# System dependencies. Each missing one stops the configure step naming the Debian package to install.
find_package(Threads REQUIRED)

if(NOT BLUELM_KERNELS_ONLY)
  find_package(Eigen3 3.3 QUIET NO_MODULE)
  if(NOT Eigen3_FOUND)
    message(FATAL_ERROR "Eigen3 not found: install it with `apt-get install libeigen3-dev` (or run `make setup`).")
  endif()

  find_package(nlohmann_json 3.9 QUIET)
  if(NOT nlohmann_json_FOUND)
    message(FATAL_ERROR "nlohmann/json not found: install it with `apt-get install nlohmann-json3-dev` (or run `make setup`).")
  endif()

  # Image codecs: the libraries Pillow itself decodes with, called directly (csrc/image/decode.cpp).
  find_package(JPEG QUIET)
  if(NOT JPEG_FOUND)
    message(FATAL_ERROR "libjpeg not found: install it with `apt-get install libjpeg62-turbo-dev` (or run `make setup`).")
  endif()
  find_package(PNG 1.6 QUIET)
  if(NOT PNG_FOUND)
    message(FATAL_ERROR "libpng 1.6 not found: install it with `apt-get install libpng-dev` (or run `make setup`).")
  endif()
  # libwebp ships no CMake package on Debian bookworm (1.2.4): its header and library are looked up directly.
  find_path(BLUELM_WEBP_INCLUDE webp/decode.h)
  find_library(BLUELM_WEBP_LIBRARY webp)
  if(NOT BLUELM_WEBP_INCLUDE OR NOT BLUELM_WEBP_LIBRARY)
    message(FATAL_ERROR "libwebp not found: install it with `apt-get install libwebp-dev` (or run `make setup`).")
  endif()
  add_library(bluelm_webp UNKNOWN IMPORTED)
  set_target_properties(bluelm_webp PROPERTIES IMPORTED_LOCATION "${BLUELM_WEBP_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${BLUELM_WEBP_INCLUDE}")
  message(STATUS "bluelm: Eigen ${Eigen3_VERSION}, nlohmann_json ${nlohmann_json_VERSION}, "
                 "libjpeg ${JPEG_VERSION}, libpng ${PNG_VERSION_STRING}, libwebp ${BLUELM_WEBP_LIBRARY}")
endif()

if(BLUELM_PYTHON)
  find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)
  find_package(pybind11 CONFIG QUIET)
  if(NOT pybind11_FOUND)
    message(FATAL_ERROR "pybind11 not found: `pip install pybind11` (it is a build requirement in pyproject.toml).")
  endif()
endif()

# SIMDe (Debian libsimde-dev, header-only): the C++ tests compile the AVX-512 kernel source through it, so that
# source is checked on x86 CPUs without AVX-512. Optional: without it that one test is left out.
if(BLUELM_TESTS AND BLUELM_ARCH_X86)
  find_path(BLUELM_SIMDE_INCLUDE simde/x86/avx512.h)
  if(BLUELM_SIMDE_INCLUDE)
    set(BLUELM_HAVE_SIMDE ON)
  else()
    message(STATUS "bluelm: SIMDe not found (apt-get install libsimde-dev): the AVX-512 source test is skipped")
  endif()
endif()
