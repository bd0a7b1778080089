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

  find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
  if(NOT OpenCV_FOUND)
    message(FATAL_ERROR "OpenCV (core, imgproc, imgcodecs) not found: install it with `apt-get install libopencv-dev` (or run `make setup`).")
  endif()
  message(STATUS "bluelm: Eigen ${Eigen3_VERSION}, nlohmann_json ${nlohmann_json_VERSION}, OpenCV ${OpenCV_VERSION}")
endif()

if(BLUELM_PYTHON)
  find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)
  find_package(pybind11 CONFIG QUIET)
  if(NOT pybind11_FOUND)
    message(FATAL_ERROR "pybind11 not found: `pip install pybind11` (it is a build requirement in pyproject.toml).")
  endif()
endif()
