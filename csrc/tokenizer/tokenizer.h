#pragma once
// Tokenizers for the native engine (standard library only; docs/tokenizer.md):
//   - byte-level BPE as in GPT-2 / HF `tokenizers` (ByteLevel pre-tokenizer, BPE model, ByteLevel decoder),
//     with the `gpt2` or `smollm` pre-tokenizer; SmolLM2-135M-Instruct's tokenizer is one;
//   - the byte tokenizer of the randomly initialised test models (Tokenizer::bytes).
// A Tokenizer is built from plain arrays (Spec: what the engine's manifest or a GGUF file provides), or read
// from / written to the compact binary format of serialize.cpp. Control tokens written in the text
// ("<|im_start|>") are matched whole, as HF does for added tokens. Encoding is thread-safe.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/pretokenize.h"

namespace bluelm::tokenizer {

enum class Model : uint8_t { byte_level_bpe = 1, bytes = 2 };
// GGUF's numbering (tokenizer.ggml.token_type).
enum class TokenType : uint8_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

const char* model_name(Model m);
const char* pre_tokenizer_name(PreTokenizer p);
Model parse_model(std::string_view name);                // "byte_level_bpe" (or GGUF's "gpt2"), "bytes"
PreTokenizer parse_pre_tokenizer(std::string_view name);  // "none", "gpt2", "smollm"

struct Spec {
  Model model = Model::byte_level_bpe;
  PreTokenizer pre = PreTokenizer::smollm;
  std::vector<std::string> tokens;                          // [n_vocab] token text as stored (GPT-2 alphabet)
  std::vector<TokenType> types;                             // [n_vocab], or empty for all normal
  std::vector<std::pair<std::string, std::string>> merges;  // [n_merges] BPE merges, highest priority first
  int32_t bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;  // -1: none
  bool add_bos = false, add_eos = false;                    // what encode() adds when add_special is set
};

// "left right" (a GGUF / HF merges line) -> {left, right}; FormatError unless exactly one space separates two
// non-empty halves.
std::pair<std::string, std::string> parse_merge(std::string_view line);

struct EncodeOptions {
  bool add_special = true;    // prepend bos / append eos as Spec::add_bos / add_eos ask
  bool parse_special = true;  // match control tokens written in the text; user-defined tokens always match
};

// Layout of Tokenizer::bytes (the `tiny` test models): ids 0..7 control tokens, 8 + b for byte b, the rest up to
// vocab_size reserved control tokens "<|reserved_N|>".
constexpr int32_t kBytePad = 0, kByteBos = 1, kByteEos = 2, kByteImStart = 3, kByteImEnd = 4, kByteImage = 5;
constexpr int32_t kByteOffset = 8;
constexpr int32_t kByteMinVocab = kByteOffset + 256;

class Tokenizer {
 public:
  explicit Tokenizer(Spec spec);  // validates everything (FormatError naming the token or merge, LimitError)
  static Tokenizer bytes(int32_t vocab_size = kByteMinVocab);
  static Tokenizer from_bytes(const uint8_t* data, size_t size);  // the binary format (serialize.cpp)
  static Tokenizer load(const std::string& path);
  std::vector<uint8_t> to_bytes() const;
  void save(const std::string& path) const;

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& opt = {}) const;
  // The bytes the ids stand for (may end inside a UTF-8 character); skip_special drops control tokens.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // As decode, then invalid UTF-8 replaced by U+FFFD (what HF's decode returns).
  std::string decode_text(const std::vector<int32_t>& ids, bool skip_special = false) const;

  const std::string& token_to_piece(int32_t id) const;  // the bytes of one token
  const std::string& token_text(int32_t id) const;      // the token as stored in the vocabulary
  TokenType token_type(int32_t id) const;
  int32_t token_to_id(std::string_view text) const;  // -1 when absent
  bool is_control(int32_t id) const { return token_type(id) == TokenType::control; }

  int32_t n_vocab() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  const Spec& spec() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
  explicit Tokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  void check_id(int32_t id) const;
};

// Detokenizes one token at a time for streaming output: push() returns the text that is complete so far (valid
// UTF-8), holding back the bytes of a character that a later token will finish; flush() returns the rest (an
// unfinished character becomes U+FFFD). The concatenated output equals decode_text of all the ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(Tokenizer tok, bool skip_special = false) : tok_(std::move(tok)), skip_(skip_special) {}
  std::string push(int32_t id);
  std::string flush();
  size_t pending_bytes() const { return pending_.size(); }

 private:
  Tokenizer tok_;
  bool skip_;
  std::string pending_;
};

// A chat prompt in the ChatML family (SmolLM2: "<|im_start|>role\n...<|im_end|>\n"), for the engine, which
// cannot run the Jinja template. docs/tokenizer.md says how a packager derives these fields from a template.
struct ChatMessage {
  std::string role, content;
};
struct ChatFormat {
  std::string prologue;                                  // before the first turn (e.g. a BOS token's text)
  std::string turn_prefix = "<|im_start|>{role}\n";      // "{role}" stands for the message's role
  std::string turn_suffix = "<|im_end|>\n";
  bool has_default_system = false;                       // insert a system turn when the first is not one
  std::string default_system;
  std::string generation_prompt = "<|im_start|>assistant\n";
};
std::string format_chat(const ChatFormat& fmt, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);

}  // namespace bluelm::tokenizer
