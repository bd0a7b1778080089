#include "tokenizer/unicode.h"

#include <algorithm>

#include "tokenizer/unicode_tables.h"

namespace bluelm::tokenizer {

namespace {
using unicode_tables::kClassRanges;
using unicode_tables::kClassRangeCount;

struct AsciiClasses {
  std::array<CharClass, 128> cls{};
  AsciiClasses() {
    for (uint32_t c = 0; c < 128; ++c) cls[c] = lookup(c);
  }
  static CharClass lookup(uint32_t cp) {
    const auto* end = kClassRanges + kClassRangeCount;
    const auto* it = std::upper_bound(kClassRanges, end, cp,
                                      [](uint32_t v, const unicode_tables::ClassRange& r) { return v < r.first; });
    if (it == kClassRanges) return CharClass::other;
    --it;
    return cp <= it->last ? CharClass(it->cls) : CharClass::other;
  }
};

const AsciiClasses& ascii_classes() {
  static const AsciiClasses t;
  return t;
}

struct ByteAlphabet {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> from_cp{};  // code points < 324 cover the whole alphabet
  ByteAlphabet() {
    from_cp.fill(-1);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? b : 256 + extra++;
      from_cp[to_cp[b]] = int16_t(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a;
  return a;
}
}  // namespace

CharClass char_class(uint32_t cp) {
  if (cp < 128) return ascii_classes().cls[cp];
  return AsciiClasses::lookup(cp);
}

const char* unicode_version() { return unicode_tables::kUnicodeVersion; }

Utf8Step utf8_step(std::string_view s, size_t i) {
  const auto b0 = uint8_t(s[i]);
  if (b0 < 0x80) return {Utf8Step::complete, 1, b0};
  uint32_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Table 3-7)
  uint32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {Utf8Step::invalid, 1, 0};
  }
  for (uint32_t k = 1; k < need; ++k) {
    if (i + k >= s.size()) return {Utf8Step::incomplete, k, 0};
    const auto b = uint8_t(s[i + k]);
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return {Utf8Step::invalid, k, 0};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Step::complete, need, cp};
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const Utf8Step st = utf8_step(bytes, i);
    if (st.kind == Utf8Step::complete)
      out.append(bytes.data() + i, st.len);
    else
      out += "\xEF\xBF\xBD";
    i += st.len;
  }
  return out;
}

size_t utf8_ready_prefix(std::string_view s) {
  // A character has at most 4 bytes: only a lead byte among the last 3 can start an unfinished one.
  const size_t from = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t i = from; i < s.size(); ++i) {
    const auto b = uint8_t(s[i]);
    if (b < 0xC2 || b > 0xF4) continue;
    if (utf8_step(s, i).kind == Utf8Step::incomplete) return i;
  }
  return s.size();
}

const std::array<uint32_t, 256>& byte_to_codepoint() { return byte_alphabet().to_cp; }

int codepoint_to_byte(uint32_t cp) {
  const auto& a = byte_alphabet();
  return cp < a.from_cp.size() ? a.from_cp[cp] : -1;
}

}  // namespace bluelm::tokenizer
