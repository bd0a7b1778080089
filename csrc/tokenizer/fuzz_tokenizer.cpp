// libFuzzer harness for the tokenizer (built by `make fuzz`): the input is read as a tokenizer file (as given,
// then with its CRC re-stamped so the fuzzer also reaches the checks behind it) and as text for a byte-level BPE
// and the byte tokenizer. Any input must end in a result or a bluelm exception; encoding must round-trip and
// streaming decode must equal whole decode, else the harness aborts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {
using namespace bluelm::tokenizer;

uint32_t crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

const Tokenizer& small_bpe() {
  static const Tokenizer t = [] {
    Spec s;
    s.tokens = {"<|im_start|>", "<|im_end|>"};
    s.types = {TokenType::control, TokenType::control};
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      utf8_append(ch, byte_to_codepoint()[b]);
      s.tokens.push_back(ch);
      s.types.push_back(TokenType::normal);
    }
    const char* merges[][2] = {{"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"Ġ", "Ġ"}, {"ĠĠ", "ĠĠ"}, {"i", "n"}};
    for (auto& m : merges) {
      s.merges.emplace_back(m[0], m[1]);
      s.tokens.push_back(std::string(m[0]) + m[1]);
      s.types.push_back(TokenType::normal);
    }
    return Tokenizer(std::move(s));
  }();
  return t;
}

void check_roundtrip(const Tokenizer& t, const std::string& text) {
  const std::vector<int32_t> ids = t.encode(text, {false, true});
  if (t.decode(ids) != text) std::abort();
  StreamDecoder d(t);
  std::string streamed;
  for (const int32_t id : ids) streamed += d.push(id);
  streamed += d.flush();
  if (streamed != t.decode_text(ids)) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    Tokenizer::from_bytes(data, size);
  } catch (const std::invalid_argument&) {
  }
  if (size >= 8) {
    std::vector<uint8_t> stamped(data, data + size);
    const uint32_t c = crc32(stamped.data(), size - 4);
    for (int k = 0; k < 4; ++k) stamped[size - 4 + k] = uint8_t(c >> (8 * k));
    try {
      const Tokenizer t = Tokenizer::from_bytes(stamped.data(), stamped.size());
      t.encode("fuzz <|im_start|> 123");
    } catch (const std::invalid_argument&) {
    }
  }
  const std::string text(reinterpret_cast<const char*>(data), size);
  check_roundtrip(small_bpe(), text);
  static const Tokenizer bytes = Tokenizer::bytes();
  check_roundtrip(bytes, text);
  return 0;
}
