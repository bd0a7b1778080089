#pragma once
// Pre-tokenizers: cut text into the pieces BPE runs on, exactly as HF `tokenizers` does for
//   gpt2:   ByteLevel(add_prefix_space=False, use_regex=True), i.e. the GPT-2 regex
//           's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   smollm: Sequence[Digits(individual_digits=True), ByteLevel(...)]: every \p{N} character becomes a piece of
//           its own first, then the GPT-2 regex runs on each stretch between them (its look-ahead never sees
//           past a digit).
// The regex is hand-written (no std::regex: it has no \p classes and backtracks). Bytes of invalid UTF-8 are
// single-byte pieces of class "other", so every input byte lands in exactly one piece.
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace bluelm::tokenizer {

enum class PreTokenizer : uint8_t { none = 0, gpt2 = 1, smollm = 2 };

struct Piece {
  uint32_t begin, end;  // byte offsets into the text
};

// Appends the pieces of text to out (in order, covering every byte); `none` gives one piece.
void pretokenize(std::string_view text, PreTokenizer pre, std::vector<Piece>& out);

}  // namespace bluelm::tokenizer
