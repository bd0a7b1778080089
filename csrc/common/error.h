#pragma once
// Error types of the core. Bindings map them to Python exceptions:
//   InvalidArgument -> ValueError (bad shapes, sizes, parameters)
//   FormatError     -> bluelm_v.FormatError (a ValueError): corrupt or hostile files, images, base64
//   LimitError      -> bluelm_v.LimitError (a ValueError): input over a configured limit (pixels, bytes)
//   Unsupported     -> RuntimeError (an ISA or feature this build or CPU lacks)
#include <sstream>
#include <stdexcept>
#include <string>

namespace bluelm {

struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct FormatError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct LimitError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// cat("width ", w, " must be >= 1") -> std::string
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

}  // namespace bluelm
