#pragma once
// UTF-8 and Unicode helpers of the tokenizer: character classes for the pre-tokenizer (generated tables, see
// tools/gen_unicode_tables.py), a strict UTF-8 stepper shared by the pre-tokenizer, the lossy decoder and the
// streaming decoder, and GPT-2's byte <-> character alphabet.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bluelm::tokenizer {

enum class CharClass : uint8_t { other = 0, letter = 1, number = 2, whitespace = 3 };

// \p{L}, \p{N}, White_Space or other, for a code point (surrogates and values past U+10FFFF: other).
CharClass char_class(uint32_t cp);
const char* unicode_version();

// One step of UTF-8 decoding at s[i] (Unicode Table 3-7 well-formed sequences only).
//   complete:   a whole character of `len` bytes, code point `cp`
//   invalid:    `len` bytes (>= 1) form a maximal ill-formed subpart (one U+FFFD in lossy decoding)
//   incomplete: the `len` bytes up to the end of s are a valid but unfinished prefix of a character
struct Utf8Step {
  enum Kind : uint8_t { complete, invalid, incomplete } kind;
  uint32_t len;
  uint32_t cp;
};
Utf8Step utf8_step(std::string_view s, size_t i);

void utf8_append(std::string& out, uint32_t cp);

// Bytes to valid UTF-8: every maximal ill-formed subpart becomes U+FFFD (the W3C / Unicode practice that
// Python's errors="replace" and Rust's from_utf8_lossy follow).
std::string utf8_lossy(std::string_view bytes);

// How many leading bytes of s can be decoded now: all of s except a trailing valid-but-unfinished character.
size_t utf8_ready_prefix(std::string_view s);

// GPT-2's byte-level alphabet: byte b <-> a printable code point (printable Latin-1 bytes map to themselves,
// the other 68 to U+0100.. in byte order).
const std::array<uint32_t, 256>& byte_to_codepoint();
// The byte a code point stands for, or -1 when it is not in the alphabet.
int codepoint_to_byte(uint32_t cp);

}  // namespace bluelm::tokenizer
