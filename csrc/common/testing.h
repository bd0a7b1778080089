#pragma once
// A minimal test registry for the C++ checks (no third-party framework, so the same program cross-builds for
// aarch64 and runs under qemu). BLUELM_TEST(name) { ... } registers a test; CHECK(cond) and CHECK_NEAR record
// failures and keep going; CHECK_THROWS(expr, Type) expects an exception.
#include <cmath>
#include <functional>
#include <iostream>
#include <string>
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
