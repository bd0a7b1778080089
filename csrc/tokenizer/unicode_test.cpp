#include <string>
#include <vector>

#include "common/testing.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

using namespace bluelm::tokenizer;

namespace {
std::vector<std::string> cut(const std::string& text, PreTokenizer pre) {
  std::vector<Piece> pieces;
  pretokenize(text, pre, pieces);
  std::vector<std::string> out;
  for (const Piece& p : pieces) out.push_back(text.substr(p.begin, p.end - p.begin));
  return out;
}
}  // namespace

BLUELM_TEST(unicode_char_classes) {
  CHECK(char_class('a') == CharClass::letter);
  CHECK(char_class('7') == CharClass::number);
  CHECK(char_class(' ') == CharClass::whitespace);
  CHECK(char_class('\t') == CharClass::whitespace);
  CHECK(char_class(0x1C) == CharClass::other);  // str.isspace() says yes, Unicode White_Space (and \s) no
  CHECK(char_class(0x85) == CharClass::whitespace);
  CHECK(char_class(0xA0) == CharClass::whitespace);
  CHECK(char_class(0x2028) == CharClass::whitespace);
  CHECK(char_class(0x3000) == CharClass::whitespace);
  CHECK(char_class(0x200B) == CharClass::other);   // zero width space is Cf
  CHECK(char_class(0x4E2D) == CharClass::letter);  // 中
  CHECK(char_class(0x0661) == CharClass::number);  // Arabic-Indic digit one (Nd)
  CHECK(char_class(0x2167) == CharClass::number);  // Roman numeral eight (Nl)
  CHECK(char_class(0x00BD) == CharClass::number);  // vulgar fraction one half (No)
  CHECK(char_class(0x0301) == CharClass::other);   // combining acute accent (Mn)
  CHECK(char_class(0x1F600) == CharClass::other);  // emoji (So)
  CHECK(char_class(0x20000) == CharClass::letter);  // CJK extension B
  CHECK(char_class(0xD800) == CharClass::other);
  CHECK(char_class(0x10FFFF) == CharClass::other);
  CHECK(char_class(0x110000) == CharClass::other);
  CHECK(char_class(0xFFFFFFFF) == CharClass::other);
}

BLUELM_TEST(unicode_utf8_step) {
  const std::string emoji = "\xF0\x9F\x98\x80";
  Utf8Step s = utf8_step(emoji, 0);
  CHECK(s.kind == Utf8Step::complete);
  CHECK_EQ(s.len, 4u);
  CHECK_EQ(s.cp, 0x1F600u);
  CHECK(utf8_step("\xE4\xBD", 0).kind == Utf8Step::incomplete);
  CHECK_EQ(utf8_step("\xE4\xBD", 0).len, 2u);
  const char* invalid[] = {"\xE0\x80\x80", "\xED\xA0\x80", "\xC0\xAF", "\xC1\xBF", "\xF4\x90\x80\x80",
                           "\xF5\x80", "\xFF", "\x80"};
  for (const char* b : invalid) {
    CHECK(utf8_step(b, 0).kind == Utf8Step::invalid);
    CHECK_EQ(utf8_step(b, 0).len, 1u);
  }
  // A lead byte and a valid continuation, then a bad byte: the maximal subpart is two bytes.
  CHECK(utf8_step("\xE4\xBD" "A", 0).kind == Utf8Step::invalid);
  CHECK_EQ(utf8_step("\xE4\xBD" "A", 0).len, 2u);
  std::string out;
  for (uint32_t cp : {0x41u, 0xE9u, 0x4E2Du, 0x1F600u, 0x10FFFFu}) utf8_append(out, cp);
  CHECK(out == "A\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF");
}

BLUELM_TEST(unicode_lossy_and_ready_prefix) {
  // Same results as Python's bytes.decode("utf-8", "replace").
  CHECK(utf8_lossy("\xF0\x9F\x98" "a") == "\xEF\xBF\xBD" "a");
  CHECK(utf8_lossy("\xE4\xBD\xE4\xBD\xA0") == "\xEF\xBF\xBD\xE4\xBD\xA0");
  CHECK(utf8_lossy("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(utf8_lossy("\xFF\xFE") == "\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(utf8_lossy("e\xCC\x81") == "e\xCC\x81");  // combining mark kept as it is
  CHECK_EQ(utf8_ready_prefix("ab\xE4\xBD"), 2u);
  CHECK_EQ(utf8_ready_prefix("ab\xE4\xBD\xA0"), 5u);
  CHECK_EQ(utf8_ready_prefix("ab\xFF"), 3u);
  CHECK_EQ(utf8_ready_prefix("\xF0\x9F\x98"), 0u);
  CHECK_EQ(utf8_ready_prefix("\xF0\x9F\x98\x80"), 4u);
  CHECK_EQ(utf8_ready_prefix("\xE4\xBD" "A"), 3u);  // already invalid: nothing to wait for
  CHECK_EQ(utf8_ready_prefix(""), 0u);
}

BLUELM_TEST(unicode_byte_alphabet) {
  CHECK_EQ(byte_to_codepoint()[' '], 0x120u);   // 'Ġ'
  CHECK_EQ(byte_to_codepoint()['\n'], 0x10Au);  // 'Ċ'
  CHECK_EQ(byte_to_codepoint()['A'], uint32_t('A'));
  CHECK_EQ(byte_to_codepoint()[0xAD], 0x143u);  // soft hyphen is not printable
  for (int b = 0; b < 256; ++b) CHECK_EQ(codepoint_to_byte(byte_to_codepoint()[b]), b);
  CHECK_EQ(codepoint_to_byte(0x4E2D), -1);
}

BLUELM_TEST(pretokenize_gpt2_and_smollm) {
  using V = std::vector<std::string>;
  CHECK(cut("Hello world's  1234 \n\n  x", PreTokenizer::smollm) ==
        V({"Hello", " world", "'s", "  ", "1", "2", "3", "4", " \n\n ", " x"}));
  CHECK(cut("a  1 b's  \n\n  x", PreTokenizer::gpt2) == V({"a", " ", " 1", " b", "'s", "  \n\n ", " x"}));
  CHECK(cut("a  1", PreTokenizer::smollm) == V({"a", "  ", "1"}));  // the digit cut hides the look-ahead
  CHECK(cut("I'll we're 'x", PreTokenizer::gpt2) == V({"I", "'ll", " we", "'re", " '", "x"}));
  CHECK(cut("x!!  ?", PreTokenizer::gpt2) == V({"x", "!!", " ", " ?"}));
  CHECK(cut(" \t", PreTokenizer::gpt2) == V({" \t"}));
  CHECK(cut("\xFF" "ab\xE4\xBD", PreTokenizer::gpt2) == V({"\xFF", "ab", "\xE4\xBD"}));  // stray bytes: "other"
  CHECK(cut("\xD9\xA1\xD9\xA2", PreTokenizer::smollm) == V({"\xD9\xA1", "\xD9\xA2"}));  // Arabic-Indic digits
  CHECK(cut("e\xCC\x81t\xC3\xA9", PreTokenizer::gpt2) == V({"e", "\xCC\x81", "t\xC3\xA9"}));  // Mn is not \p{L}
  CHECK(cut("abc", PreTokenizer::none) == V({"abc"}));
  CHECK(cut("", PreTokenizer::smollm).empty());
}
