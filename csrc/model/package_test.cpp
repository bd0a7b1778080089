// Model package reader: a valid package opens; every kind of damage is refused with FormatError, never a crash.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/testing.h"
#include "model/package.h"

using namespace bluelm;
using nlohmann::json;

namespace {

std::string temp_dir() {
  char tmpl[] = "/tmp/bluelm_pkg_XXXXXX";
  const char* d = mkdtemp(tmpl);
  return d ? std::string(d) : std::string("/tmp");
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// A tiny text-only model: vocab 300 (byte tokenizer), hidden 32, 1 layer; only the tensors the test touches.
json manifest(int64_t weight_bytes) {
  json m;
  m["format"] = model::kPackageFormatName;
  m["format_version"] = model::kPackageFormatVersion;
  m["model"] = {{"name", "t"},
                {"llm", {{"hidden", 32}, {"intermediate", 64}, {"layers", 1}, {"heads", 2}, {"kv_heads", 1},
                         {"vocab", 300}, {"max_context", 64}}}};
  m["tokenizer"] = {{"file", "tokenizer.bin"}, {"eos_ids", {2}}, {"add_bos", true}};
  m["weights"] = {{"file", "weights.bin"}, {"bytes", weight_bytes}};
  // q8_0 [2, 32]: 2 rows of 34 bytes = 68; f32 [32] at 128: 128 bytes.
  m["tensors"] = {{"a", {{"format", "q8_0"}, {"shape", {2, 32}}, {"offset", 0}, {"bytes", 68}}},
                  {"b", {{"format", "f32"}, {"shape", {32}}, {"offset", 128}, {"bytes", 128}}}};
  return m;
}

std::string make_package(const json& m, int64_t weight_bytes) {
  const std::string dir = temp_dir();
  write(dir + "/manifest.json", m.dump());
  write(dir + "/weights.bin", std::string(size_t(weight_bytes), '\0'));
  tokenizer::Tokenizer::bytes(300).save(dir + "/tokenizer.bin");
  return dir;
}

}  // namespace

BLUELM_TEST(package_opens_and_checks_shapes) {
  const std::string dir = make_package(manifest(256), 256);
  auto pkg = model::Package::open(dir);
  CHECK_EQ(pkg->config().llm.hidden, 32);
  CHECK_EQ(pkg->config().llm.head_dim, 16);
  CHECK(pkg->add_bos());
  CHECK_EQ(pkg->eos_ids().size(), size_t(1));
  CHECK_EQ(pkg->tensor("a", {2, 32}).bytes, 68);
  CHECK(!pkg->tensor("a").is_f32);
  CHECK(pkg->tensor("b", {32}).is_f32);
  CHECK_THROWS(pkg->tensor("a", {32, 2}), FormatError);
  CHECK_THROWS(pkg->tensor("missing"), FormatError);
}

BLUELM_TEST(package_refuses_damage) {
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    int64_t file_bytes;
  };
  const std::vector<Case> cases = {
      {"truncated weights", [](json&) {}, 200},
      {"wrong format name", [](json& m) { m["format"] = "gguf"; }, 256},
      {"future version", [](json& m) { m["format_version"] = 99; }, 256},
      {"offset past the end", [](json& m) { m["tensors"]["b"]["offset"] = 1 << 20; m["weights"].erase("bytes"); }, 256},
      {"huge offset", [](json& m) { m["tensors"]["b"]["offset"] = int64_t(1) << 62; }, 256},
      {"unaligned offset", [](json& m) { m["tensors"]["b"]["offset"] = 100; }, 256},
      {"bytes disagree with shape", [](json& m) { m["tensors"]["a"]["bytes"] = 70; }, 256},
      {"negative size", [](json& m) { m["tensors"]["a"]["shape"] = {-2, 32}; }, 256},
      {"overflowing shape", [](json& m) { m["tensors"]["a"]["shape"] = {int64_t(1) << 40, int64_t(1) << 40}; }, 256},
      {"k not a multiple of the group", [](json& m) { m["tensors"]["a"]["shape"] = {2, 33}; }, 256},
      {"unknown quant format", [](json& m) { m["tensors"]["a"]["format"] = "q3_k"; }, 256},
      {"tokenizer path escapes", [](json& m) { m["tokenizer"]["file"] = "../x"; }, 256},
      {"eos id outside the vocabulary", [](json& m) { m["tokenizer"]["eos_ids"] = {100000}; }, 256},
      {"heads not dividing", [](json& m) { m["model"]["llm"]["kv_heads"] = 3; }, 256},
      {"missing llm field", [](json& m) { m["model"]["llm"].erase("vocab"); }, 256},
      {"string where a number goes", [](json& m) { m["model"]["llm"]["hidden"] = "32"; }, 256},
  };
  for (const Case& c : cases) {
    json m = manifest(256);
    c.edit(m);
    const std::string dir = make_package(m, c.file_bytes);
    bool refused = false;
    try {
      model::Package::open(dir);
    } catch (const FormatError&) {
      refused = true;
    } catch (const LimitError&) {
      refused = true;
    }
    if (!refused) ::bluelm::testing::record_failure(__FILE__, __LINE__, std::string("not refused: ") + c.what);
  }
  // Not JSON at all, and a missing manifest.
  const std::string dir = make_package(manifest(256), 256);
  write(dir + "/manifest.json", "{\"format\": ");
  CHECK_THROWS(model::Package::open(dir), FormatError);
  CHECK_THROWS(model::Package::open(dir + "/nope"), FormatError);
}
