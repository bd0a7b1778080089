// Model package reader: a valid package opens; every kind of damage is refused with FormatError, never a crash.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common/error.h"
#include "common/testing.h"
#include "model/package.h"

using namespace bluelm;
using nlohmann::json;

namespace {

// Every package of this file is a folder inside one scratch folder, removed when the test program ends.
std::string temp_dir() {
  static ::bluelm::testing::ScratchDir root("bluelm_pkg_");
  static int count = 0;
  const std::string dir = root.path() + "/" + std::to_string(count++);
  if (::mkdir(dir.c_str(), 0700) != 0) throw std::runtime_error("cannot make " + dir);
  return dir;
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

// The scratch folder the package tests write into goes with everything in it: files, a FIFO, a nested folder, and a
// symlink out of it, whose target stays.
BLUELM_TEST(scratch_dir_is_removed_with_its_contents) {
  ::bluelm::testing::ScratchDir outside;
  write(outside.path() + "/keep", "x");
  std::string path;
  {
    ::bluelm::testing::ScratchDir d;
    path = d.path();
    CHECK(std::filesystem::is_directory(path));
    write(path + "/a", "bytes");
    CHECK(::mkfifo((path + "/fifo").c_str(), 0600) == 0);
    CHECK(::mkdir((path + "/sub").c_str(), 0700) == 0);
    write(path + "/sub/b", "more");
    CHECK(::symlink(outside.path().c_str(), (path + "/link").c_str()) == 0);
  }
  CHECK(!std::filesystem::exists(path));
  CHECK(std::filesystem::exists(outside.path() + "/keep"));
}

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

namespace {
// Opening the package must throw an exception of type E (not hang, crash or succeed).
template <class E>
bool refused_with(const std::string& dir, const char* needle) {
  try {
    model::Package::open(dir);
  } catch (const E& e) {
    return std::string(e.what()).find(needle) != std::string::npos;
  } catch (...) {
  }
  return false;
}
}  // namespace

// Issue 19: each finding of the hostile-file run, as it was reproduced.
BLUELM_TEST(package_refuses_hostile_files) {
  {  // an array nested 100,000 deep inside "model" (segfaulted in dump())
    json m = manifest(256);
    std::string text = m.dump();
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    text.replace(text.find("\"model\":{") + 9, 0, "\"x\":" + deep + ",");
    const std::string dir = make_package(m, 256);
    write(dir + "/manifest.json", text);
    CHECK(refused_with<LimitError>(dir, "nested deeper than 64"));
  }
  for (const char* file : {"weights.bin", "tokenizer.bin"}) {  // a FIFO (hung in open())
    const std::string dir = make_package(manifest(256), 256);
    ::unlink((dir + "/" + file).c_str());
    CHECK(::mkfifo((dir + "/" + file).c_str(), 0600) == 0);
    CHECK(refused_with<FormatError>(dir, "not a regular file"));
  }
  {  // a symlink out of the package folder
    const std::string dir = make_package(manifest(256), 256), other = make_package(manifest(256), 256);
    ::unlink((dir + "/weights.bin").c_str());
    CHECK(::symlink((other + "/weights.bin").c_str(), (dir + "/weights.bin").c_str()) == 0);
    CHECK(refused_with<FormatError>(dir, "outside the package folder"));
  }
  {  // a folder where the weights file goes
    json m = manifest(256);
    m["weights"]["file"] = "..";
    CHECK(refused_with<FormatError>(make_package(m, 256), "weights.file"));
  }
  {  // "deploy": {"chunk": 1048576} (std::bad_alloc in the session workspace)
    json m = manifest(256);
    m["model"]["deploy"] = {{"chunk", 1048576}};
    CHECK(refused_with<LimitError>(make_package(m, 256), "model.deploy.chunk = 1048576"));
  }
  {  // a tensor whose offset points inside another (silently ran other weights)
    json m = manifest(256);
    m["tensors"]["c"] = {{"format", "f32"}, {"shape", {16}}, {"offset", 0}, {"bytes", 64}};
    CHECK(refused_with<FormatError>(make_package(m, 256), "lies inside tensor"));
  }
  {  // invalid UTF-8 in manifest.json
    const std::string dir = make_package(manifest(256), 256);
    std::string text = manifest(256).dump();
    text.replace(text.find("\"t\""), 3, "\"\xff\xfe\"");
    write(dir + "/manifest.json", text);
    CHECK(refused_with<FormatError>(dir, "not UTF-8 text"));
  }
  {  // a NaN fp16 scale in a quantized block, and an infinite f32 value
    const std::string dir = make_package(manifest(256), 256);
    std::string w(256, '\0');
    w[34] = '\x00', w[35] = '\x7e';  // row 1's block scale: fp16 0x7E00 is a NaN
    write(dir + "/weights.bin", w);
    CHECK(refused_with<FormatError>(dir, "non-finite scale"));
    w[35] = 0;
    w[128 + 2] = '\x80', w[128 + 3] = '\x7f';  // b[0] = +inf (float bits 0x7F800000)
    write(dir + "/weights.bin", w);
    CHECK(refused_with<FormatError>(dir, "must be finite"));
  }
}

BLUELM_TEST(model_config_bounds_depth_before_parsing) {
  const std::string deep = "{\"llm\":" + std::string(10000, '[') + std::string(10000, ']') + "}";
  CHECK_THROWS(model::parse_model_config(deep, "m.json"), LimitError);
  CHECK_THROWS(model::parse_model_config("{\"name\":\"\xc3\"}", "m.json"), FormatError);
  // Brackets inside strings do not count as nesting.
  const std::string text = manifest(256)["model"].dump();
  json m = json::parse(text);
  m["name"] = std::string(1000, '[');
  CHECK_EQ(model::parse_model_config(m.dump(), "m.json").name.size(), size_t(1000));
}

BLUELM_TEST(text_only_config_has_no_image_tokens_per_tile) {
  // Its vision section is unset (patch size 0): a clear error, where the fuzzer found a division by zero.
  model::ModelConfig c;
  c.name = "text";
  CHECK_THROWS(c.image_tokens_per_tile(), InvalidArgument);
  c.multimodal = true;
  c.vision.image_size = 384;
  c.vision.patch_size = 16;
  c.projector.merge = 2;
  CHECK_EQ(c.image_tokens_per_tile(), int64_t(144));
}
