// Runs every registered C++ check. Usage: bluelm_tests [substring-filter]
#include <cstring>
#include <exception>

#include "common/isa.h"
#include "common/testing.h"

namespace bluelm::testing {

std::vector<TestCase>& registry() {
  static std::vector<TestCase> r;
  return r;
}

static int g_failures = 0;

void record_failure(const char* file, int line, const std::string& what) {
  ++g_failures;
  std::cerr << "  FAIL " << file << ":" << line << ": " << what << "\n";
}

}  // namespace bluelm::testing

int main(int argc, char** argv) {
  using namespace bluelm::testing;
  const char* filter = argc > 1 ? argv[1] : nullptr;
  std::cout << "bluelm_tests: best ISA here is " << bluelm::isa_name(bluelm::best_isa()) << "\n";
  int run = 0, failed_tests = 0;
  for (const TestCase& t : registry()) {
    if (filter && !std::strstr(t.name, filter)) continue;
    const int before = g_failures;
    try {
      t.fn();
    } catch (const std::exception& e) {
      record_failure(t.name, 0, std::string("uncaught exception: ") + e.what());
    }
    ++run;
    const bool ok = g_failures == before;
    if (!ok) ++failed_tests;
    std::cout << (ok ? "ok   " : "FAIL ") << t.name << "\n";
  }
  std::cout << run << " tests, " << failed_tests << " failed\n";
  return failed_tests == 0 && run > 0 ? 0 : 1;
}
