// libFuzzer harness for the model package reader (built by `make fuzz`, ASan + UBSan over the whole core). The input
// is a package in one buffer:
//   u32 manifest length (little-endian) | manifest.json | weights head
// written to a folder in /dev/shm beside a fixed byte tokenizer; weights.bin is made as long as the manifest's
// weights.bytes says (at most 8 MiB, sparse: zeros past the head). Package::open must end in a package or a bluelm
// exception; a package it returns must have every tensor inside the file and no two sharing a byte, else abort.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/testing.h"
#include "model/package.h"
#include "tokenizer/tokenizer.h"

namespace {
using namespace bluelm;

constexpr int64_t kMaxWeights = int64_t(8) << 20;

void write_file(const std::string& path, const uint8_t* p, size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  for (size_t done = 0; done < n;) {
    const ssize_t k = ::write(fd, p + done, n - done);
    if (k <= 0) std::abort();
    done += size_t(k);
  }
  ::close(fd);
}

// The size weights.bin should have: the manifest's "weights": {"bytes": N} when it says so (no JSON parser here,
// so a plain search; the reader itself parses properly), else the head alone.
int64_t wanted_weights(const std::string& manifest, size_t head) {
  const size_t w = manifest.find("\"bytes\":", manifest.find("\"weights\""));
  if (w == std::string::npos) return int64_t(head);
  const int64_t n = std::strtoll(manifest.c_str() + w + 8, nullptr, 10);
  return std::clamp<int64_t>(n, int64_t(head), kMaxWeights);
}

// The folder, made on the first input and removed with its files when the fuzzer exits normally (/dev/shm is
// memory, so a folder left behind by every run would add up).
const std::string& folder() {
  static const testing::ScratchDir dir("bluelm_fuzz_pkg_", "/dev/shm");  // throws (so aborts) if it cannot
  static const bool tokenizer_written = [] {
    const std::vector<uint8_t> tok = tokenizer::Tokenizer::bytes(300).to_bytes();
    write_file(dir.path() + "/tokenizer.bin", tok.data(), tok.size());
    return true;
  }();
  (void)tokenizer_written;
  return dir.path();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const uint32_t m = uint32_t(data[0]) | uint32_t(data[1]) << 8 | uint32_t(data[2]) << 16 | uint32_t(data[3]) << 24;
  const size_t mlen = std::min<size_t>(m, size - 4);
  const std::string manifest(reinterpret_cast<const char*>(data + 4), mlen);
  const uint8_t* head = data + 4 + mlen;
  const size_t head_len = size - 4 - mlen;
  const std::string& dir = folder();
  write_file(dir + "/manifest.json", data + 4, mlen);
  write_file(dir + "/weights.bin", head, head_len);
  if (::truncate((dir + "/weights.bin").c_str(), off_t(wanted_weights(manifest, head_len))) != 0) std::abort();
  try {
    const auto pkg = model::Package::open(dir);
    const int64_t file = pkg->mapping().size();
    std::vector<std::pair<int64_t, int64_t>> spans;
    for (const auto& [name, t] : pkg->tensors()) {
      if (t.offset < 0 || t.bytes <= 0 || t.offset > file || t.bytes > file - t.offset) std::abort();
      pkg->tensor(name, t.shape);
      spans.emplace_back(t.offset, t.offset + t.bytes);
    }
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); ++i)
      if (spans[i].first < spans[i - 1].second) std::abort();
    (void)pkg->config().image_tokens_per_tile();
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
