#include "tokenizer/pretokenize.h"

#include "tokenizer/unicode.h"

namespace bluelm::tokenizer {

namespace {

struct Char {
  CharClass cls;
  uint32_t len;
};

Char char_at(std::string_view s, size_t i) {
  const Utf8Step st = utf8_step(s, i);
  if (st.kind != Utf8Step::complete) return {CharClass::other, 1};  // one stray byte
  return {char_class(st.cp), st.len};
}

// End of the run of characters of class `cls` starting at i.
size_t run_end(std::string_view s, size_t i, CharClass cls) {
  while (i < s.size()) {
    const Char c = char_at(s, i);
    if (c.cls != cls) break;
    i += c.len;
  }
  return i;
}

// Length of a contraction ('s 't 're 've 'm 'll 'd, case-sensitive as in the regex) at s[i], or 0.
size_t contraction_at(std::string_view s, size_t i) {
  if (s[i] != '\'' || i + 1 >= s.size()) return 0;
  const char a = s[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= s.size()) return 0;
  const char b = s[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// End of the GPT-2 regex match starting at i (always > i).
size_t gpt2_match_end(std::string_view s, size_t i) {
  if (const size_t n = contraction_at(s, i)) return i + n;
  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional U+0020, then a run of one class (not whitespace).
  const size_t q = (s[i] == ' ' && i + 1 < s.size()) ? i + 1 : i;
  const Char c = char_at(s, q);
  if (c.cls != CharClass::whitespace) return run_end(s, q, c.cls);
  // '\s+(?!\S)' then '\s+': a whitespace run; when a non-space follows, leave its last character to the next
  // match (it may become the ' ' prefix of a word), unless the run is a single character.
  size_t last = i, j = i;
  while (j < s.size()) {
    const Char w = char_at(s, j);
    if (w.cls != CharClass::whitespace) break;
    last = j;
    j += w.len;
  }
  if (j == s.size() || last == i) return j;
  return last;
}

void gpt2_split(std::string_view s, uint32_t base, std::vector<Piece>& out) {
  for (size_t i = 0; i < s.size();) {
    const size_t e = gpt2_match_end(s, i);
    out.push_back({uint32_t(base + i), uint32_t(base + e)});
    i = e;
  }
}

}  // namespace

void pretokenize(std::string_view text, PreTokenizer pre, std::vector<Piece>& out) {
  if (text.empty()) return;
  switch (pre) {
    case PreTokenizer::none:
      out.push_back({0, uint32_t(text.size())});
      return;
    case PreTokenizer::gpt2:
      gpt2_split(text, 0, out);
      return;
    case PreTokenizer::smollm: {
      size_t start = 0;
      for (size_t i = 0; i < text.size();) {
        const Char c = char_at(text, i);
        if (c.cls == CharClass::number) {
          gpt2_split(text.substr(start, i - start), uint32_t(start), out);
          out.push_back({uint32_t(i), uint32_t(i + c.len)});
          start = i + c.len;
        }
        i += c.len;
      }
      gpt2_split(text.substr(start), uint32_t(start), out);
      return;
    }
  }
}

}  // namespace bluelm::tokenizer
