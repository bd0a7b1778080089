#include <cstring>

#include "common/error.h"
#include "image/image.h"

namespace bluelm::image {

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int8_t value_of(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return int8_t(c - 'A');
  if (c >= 'a' && c <= 'z') return int8_t(c - 'a' + 26);
  if (c >= '0' && c <= '9') return int8_t(c - '0' + 52);
  if (c == '+' || c == '-') return 62;  // '-' and '_' are the URL-safe alphabet
  if (c == '/' || c == '_') return 63;
  return -1;
}
bool is_space(unsigned char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f' || c == '\v'; }
}  // namespace

std::vector<uint8_t> base64_decode(const char* text, size_t n) {
  size_t start = 0;
  // Skip a data URL prefix: "data:<mime>;base64,".
  if (n >= 5 && std::strncmp(text, "data:", 5) == 0) {
    const char* comma = static_cast<const char*>(std::memchr(text, ',', n));
    if (comma == nullptr) throw FormatError("bad base64: data URL without a comma");
    const std::string head(text, size_t(comma - text));
    if (head.size() < 7 || head.compare(head.size() - 7, 7, ";base64") != 0)
      throw FormatError("bad base64: data URL is not base64-encoded (no ';base64')");
    start = size_t(comma - text) + 1;
  }
  std::vector<uint8_t> out;
  out.reserve((n - start) / 4 * 3 + 3);
  uint32_t acc = 0;
  int bits = 0, quad = 0, pad = 0;
  for (size_t i = start; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (is_space(c)) continue;
    if (c == '=') {
      ++pad;
      if (pad > 2) throw FormatError(cat("bad base64: too much padding at offset ", i));
      ++quad;
      continue;
    }
    if (pad) throw FormatError(cat("bad base64: data after padding at offset ", i));
    const int8_t v = value_of(c);
    if (v < 0) throw FormatError(cat("bad base64: invalid character 0x", std::hex, int(c), std::dec, " at offset ", i));
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    ++quad;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t((acc >> bits) & 0xFF));
    }
  }
  const int rem = quad % 4;
  if (rem == 1) throw FormatError("bad base64: length leaves a dangling character (truncated?)");
  if (pad && rem != 0) throw FormatError("bad base64: padding does not complete a 4-character group");
  return out;
}

std::string base64_encode(const uint8_t* b, size_t n) {
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    const uint32_t v = (uint32_t(b[i]) << 16) | (uint32_t(b[i + 1]) << 8) | b[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < n) {
    uint32_t v = uint32_t(b[i]) << 16;
    if (i + 1 < n) v |= uint32_t(b[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace bluelm::image
