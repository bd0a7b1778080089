#pragma once
// A minimal test registry for the C++ checks (no third-party framework, so the same program cross-builds for
// aarch64 and runs under qemu). BLUELM_TEST(name) { ... } registers a test; CHECK(cond) and CHECK_NEAR record
// failures and keep going; CHECK_THROWS(expr, Type) expects an exception.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace bluelm::testing {

struct TestCase {
  const char* name;
  std::function<void()> fn;
};
std::vector<TestCase>& registry();
void record_failure(const char* file, int line, const std::string& what);

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

// A fresh folder `prefix` + six random characters under `parent` (default: the system's temporary directory),
// removed with all it holds when the object goes (symlinks inside are removed, never followed). Throws if no folder
// can be made, so a test never writes into /tmp itself.
class ScratchDir {
 public:
  explicit ScratchDir(const char* prefix = "bluelm_test_", const std::filesystem::path& parent = {}) {
    const std::filesystem::path dir = parent.empty() ? std::filesystem::temp_directory_path() : parent;
    // mkdtemp(3) takes a name ending in six 'X' characters and replaces them with a unique suffix.
    std::string tmpl = (dir / (std::string(prefix) + std::string(6, 'X'))).string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("ScratchDir: cannot make a folder from " + tmpl);
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;  // a destructor must not throw; a folder already gone is fine
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace bluelm::testing

#define BLUELM_CONCAT_(a, b) a##b
#define BLUELM_CONCAT(a, b) BLUELM_CONCAT_(a, b)
#define BLUELM_TEST(name)                                                                      \
  static void BLUELM_CONCAT(test_, name)();                                                    \
  static ::bluelm::testing::Register BLUELM_CONCAT(reg_, name)(#name, BLUELM_CONCAT(test_, name)); \
  static void BLUELM_CONCAT(test_, name)()

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) ::bluelm::testing::record_failure(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define CHECK_EQ(a, b)                                                                                   \
  do {                                                                                                   \
    auto va_ = (a);                                                                                      \
    auto vb_ = (b);                                                                                      \
    if (!(va_ == vb_))                                                                                   \
      ::bluelm::testing::record_failure(__FILE__, __LINE__,                                              \
                                        std::string("CHECK_EQ(" #a ", " #b "): ") + std::to_string(va_) + \
                                            " != " + std::to_string(vb_));                               \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                             \
  do {                                                                                                    \
    double va_ = (a), vb_ = (b);                                                                          \
    if (!(std::fabs(va_ - vb_) <= (tol)))                                                                 \
      ::bluelm::testing::record_failure(__FILE__, __LINE__,                                               \
                                        std::string("CHECK_NEAR(" #a ", " #b "): ") + std::to_string(va_) + \
                                            " vs " + std::to_string(vb_));                                \
  } while (0)

#define CHECK_THROWS(expr, Type)                                                                    \
  do {                                                                                              \
    bool thrown_ = false;                                                                           \
    try {                                                                                           \
      (void)(expr);                                                                                 \
    } catch (const Type&) {                                                                         \
      thrown_ = true;                                                                               \
    } catch (...) {                                                                                 \
    }                                                                                               \
    if (!thrown_) ::bluelm::testing::record_failure(__FILE__, __LINE__, "expected " #Type " from " #expr); \
  } while (0)
