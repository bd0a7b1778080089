#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/testing.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

using namespace bluelm;
using namespace bluelm::tokenizer;

namespace {
using Ids = std::vector<int32_t>;

std::string alpha(const std::string& bytes) {  // bytes in GPT-2's alphabet ("Ġa" for " a")
  std::string out;
  for (const char c : bytes) utf8_append(out, byte_to_codepoint()[uint8_t(c)]);
  return out;
}

// A small byte-level BPE: the 256 byte tokens, merges (rank order) and their results, plus control tokens.
Spec tiny_bpe_spec(PreTokenizer pre = PreTokenizer::gpt2) {
  Spec s;
  s.pre = pre;
  s.tokens = {"<|endoftext|>", "<x>", "<x>y", "<ud>"};
  s.types = {TokenType::control, TokenType::control, TokenType::control, TokenType::user_defined};
  for (int b = 0; b < 256; ++b) {
    s.tokens.push_back(alpha(std::string(1, char(b))));
    s.types.push_back(TokenType::normal);
  }
  const std::pair<std::string, std::string> merges[] = {{"a", "b"}, {"ab", "c"}, {"Ġ", "a"}, {"a", "a"},
                                                        {"aa", "aa"}, {"ä", "½"}, {"ä½", "ł"}};
  for (const auto& m : merges) {
    s.merges.push_back(m);
    s.tokens.push_back(m.first + m.second);
    s.types.push_back(TokenType::normal);
  }
  s.eos_id = s.pad_id = 0;
  return s;
}

Ids ids_of(const Tokenizer& t, const std::vector<std::string>& texts) {
  Ids out;
  for (const auto& x : texts) out.push_back(t.token_to_id(x));
  return out;
}

uint32_t lcg(uint32_t& state) {
  state = state * 1664525u + 1013904223u;
  return state >> 8;
}
}  // namespace

BLUELM_TEST(byte_tokenizer_layout_and_roundtrip) {
  const Tokenizer t = Tokenizer::bytes(512);
  CHECK_EQ(t.n_vocab(), 512);
  CHECK_EQ(t.bos_id(), 1);
  CHECK_EQ(t.eos_id(), 2);
  CHECK_EQ(t.pad_id(), 0);
  CHECK(t.token_text(3) == "<|im_start|>");
  CHECK(t.token_text(5) == "<image>");
  CHECK(t.token_text(8 + 0x41) == "<0x41>");
  CHECK(t.token_to_piece(8 + 0x41) == "A");
  CHECK(t.token_text(300) == "<|reserved_300|>");
  CHECK(t.is_control(300));
  CHECK(t.encode("hi") == Ids({1, 8 + 'h', 8 + 'i'}));
  CHECK(t.encode("hi", {false, true}) == Ids({8 + 'h', 8 + 'i'}));
  CHECK(t.encode("<|im_start|>x<|im_end|>", {false, true}) == Ids({3, 8 + 'x', 4}));
  CHECK(t.encode("<image>", {false, false}).size() == 7);  // not parsed: seven bytes
  const std::string odd = std::string("\xFF\xFE\x00 e\xCC\x81 \xF0\x9F\x98\x80", 12);
  CHECK(t.decode(t.encode(odd)) == "<bos>" + odd);
  CHECK(t.decode(t.encode(odd), true) == odd);  // bos dropped
  CHECK(t.decode({1, 8 + 'a', 2}) == "<bos>a<eos>");
  CHECK(t.decode({1, 8 + 'a', 2, 300}, true) == "a");
  CHECK_THROWS(t.decode({512}), InvalidArgument);
  CHECK_THROWS(t.decode({-1}), InvalidArgument);
  CHECK_THROWS(Tokenizer::bytes(100), InvalidArgument);
  CHECK_EQ(Tokenizer::bytes().n_vocab(), kByteMinVocab);
}

BLUELM_TEST(bpe_merges_by_rank_not_position) {
  const Tokenizer t(tiny_bpe_spec());
  // " abd": (a,b) has rank 0, (Ġ,a) rank 2: a+b is merged first, so Ġ stays alone.
  CHECK(t.encode("abc abd", {false, true}) == ids_of(t, {"abc", "Ġ", "ab", "d"}));
  CHECK(t.encode(" ac", {false, true}) == ids_of(t, {"Ġa", "c"}));
  // Equal ranks: leftmost first; then the merged pair's own merge.
  CHECK(t.encode("aaa", {false, true}) == ids_of(t, {"aa", "a"}));
  CHECK(t.encode("aaaaa", {false, true}) == ids_of(t, {"aaaa", "a"}));
  // A 3-byte character merged back into one token.
  CHECK(t.encode("\xE4\xBD\xA0", {false, true}) == ids_of(t, {"ä½ł"}));
  CHECK(t.decode(t.encode("\xE4\xBD\xA0")) == "\xE4\xBD\xA0");
  // Long pieces take the same path (not cached): 4001 'a' = 1000 x "aaaa" + "a".
  const Ids many = t.encode(std::string(4001, 'a'), {false, true});
  CHECK_EQ(many.size(), 1001u);
  CHECK_EQ(many.front(), t.token_to_id("aaaa"));
  CHECK_EQ(many.back(), t.token_to_id("a"));
  // Cached and uncached encodes agree.
  CHECK(t.encode("abc abd abc abd", {false, true}) == t.encode("abc abd abc abd", {false, true}));
}

BLUELM_TEST(bpe_special_tokens_match_whole) {
  const Tokenizer t(tiny_bpe_spec());
  // Leftmost-longest: "<x>y" beats "<x>".
  CHECK(t.encode("ab<x>yz", {false, true}) == Ids({t.token_to_id("ab"), 2, t.token_to_id("z")}));
  CHECK(t.encode("<x><|endoftext|>", {false, true}) == Ids({1, 0}));
  // parse_special=false: control tokens are plain text, user-defined ones still match.
  const Ids plain = t.encode("<x><ud>", {false, false});
  CHECK_EQ(plain.back(), 3);
  CHECK_EQ(plain.size(), 4u);  // '<', 'x', '>' then <ud>
  CHECK(t.decode(t.encode("q<|endoftext|>r")) == "q<|endoftext|>r");
  CHECK(t.decode(t.encode("q<|endoftext|>r"), true) == "qr");
}

BLUELM_TEST(bpe_invalid_utf8_input_roundtrips) {
  const Tokenizer t(tiny_bpe_spec(PreTokenizer::smollm));
  uint32_t state = 7;
  for (int round = 0; round < 200; ++round) {
    std::string s;
    const int n = int(lcg(state) % 40);
    for (int i = 0; i < n; ++i) {
      const uint32_t r = lcg(state) % 10;
      s += r < 4 ? char(lcg(state) & 0xFF) : r < 7 ? "ab 1\xE4\xBD\xA0"[lcg(state) % 8] : "<x>"[lcg(state) % 3];
    }
    CHECK(t.decode(t.encode(s)) == s);
  }
}

BLUELM_TEST(stream_decoder_waits_for_whole_characters) {
  const Tokenizer t = Tokenizer::bytes();
  StreamDecoder d(t);
  CHECK(d.push(8 + 0xE4).empty());
  CHECK(d.push(8 + 0xBD).empty());
  CHECK_EQ(d.pending_bytes(), 2u);
  CHECK(d.push(8 + 0xA0) == "\xE4\xBD\xA0");
  CHECK(d.push(8 + 0xFF) == "\xEF\xBF\xBD");  // can never become valid: replaced at once
  CHECK(d.push(8 + 0xF0).empty());
  CHECK(d.push(8 + 'a') == "\xEF\xBF\xBD" "a");
  CHECK(d.push(8 + 0xF0).empty());
  CHECK(d.flush() == "\xEF\xBF\xBD");
  CHECK(d.flush().empty());
  StreamDecoder skip(t, true);
  CHECK(skip.push(1).empty());
  CHECK(skip.push(8 + 'z') == "z");
  // Property: the streamed text equals decode_text of all ids, for random byte and control ids.
  uint32_t state = 11;
  for (int round = 0; round < 300; ++round) {
    Ids ids;
    const int n = int(lcg(state) % 24);
    for (int i = 0; i < n; ++i) {
      const uint32_t r = lcg(state) % 16;
      ids.push_back(r == 0 ? int32_t(lcg(state) % 8) : 8 + int32_t(r < 8 ? 0x80 + lcg(state) % 0x78 : lcg(state) % 256));
    }
    for (const bool sk : {false, true}) {
      StreamDecoder s(t, sk);
      std::string out;
      for (const int32_t id : ids) out += s.push(id);
      out += s.flush();
      CHECK(out == t.decode_text(ids, sk));
    }
  }
}

BLUELM_TEST(tokenizer_spec_validation) {
  Spec bad = tiny_bpe_spec();
  bad.merges.push_back({"zz", "q"});
  CHECK_THROWS(Tokenizer(bad), FormatError);  // unknown token in a merge
  bad = tiny_bpe_spec();
  bad.merges.push_back({"b", "b"});
  CHECK_THROWS(Tokenizer(bad), FormatError);  // "bb" is not a token
  bad = tiny_bpe_spec();
  bad.tokens.push_back("ab");
  bad.types.push_back(TokenType::normal);
  CHECK_THROWS(Tokenizer(bad), FormatError);  // duplicate
  bad = tiny_bpe_spec();
  bad.bos_id = 100000;
  CHECK_THROWS(Tokenizer(bad), FormatError);
  bad = tiny_bpe_spec();
  bad.add_bos = true;
  CHECK_THROWS(Tokenizer(bad), FormatError);  // no bos id
  bad = tiny_bpe_spec();
  bad.types.pop_back();
  CHECK_THROWS(Tokenizer(bad), FormatError);
  bad = tiny_bpe_spec();
  bad.tokens[4 + 'a'] = "a_";  // the token of byte 'a' is gone
  CHECK_THROWS(Tokenizer(bad), FormatError);
  bad = tiny_bpe_spec();
  bad.tokens[1] = "\xFF";
  CHECK_THROWS(Tokenizer(bad), FormatError);  // not UTF-8
  bad = tiny_bpe_spec();
  bad.tokens[1] = "";
  CHECK_THROWS(Tokenizer(bad), FormatError);
  CHECK_THROWS(Tokenizer(Spec{}), FormatError);
  CHECK_THROWS(parse_merge("ab"), FormatError);
  CHECK_THROWS(parse_merge("a b c"), FormatError);
  CHECK_THROWS(parse_merge(" b"), FormatError);
  CHECK(parse_merge("Ġ t") == std::make_pair(std::string("Ġ"), std::string("t")));
  CHECK_THROWS(parse_model("sentencepiece"), InvalidArgument);
  CHECK_THROWS(parse_pre_tokenizer("llama3"), InvalidArgument);
}

BLUELM_TEST(tokenizer_file_roundtrip_and_hostile_files) {
  const Tokenizer t(tiny_bpe_spec(PreTokenizer::smollm));
  const std::vector<uint8_t> file = t.to_bytes();
  const Tokenizer back = Tokenizer::from_bytes(file.data(), file.size());
  CHECK(back.to_bytes() == file);
  CHECK(back.encode("abc 12 <x>y\xE4\xBD\xA0") == t.encode("abc 12 <x>y\xE4\xBD\xA0"));
  CHECK(back.spec().pre == PreTokenizer::smollm);
  // Every truncation is refused with FormatError (never a crash or an allocation sized from the file).
  for (size_t n = 0; n < file.size(); ++n) CHECK_THROWS(Tokenizer::from_bytes(file.data(), n), FormatError);
  // Every single flipped byte is refused too (structure checks, then the CRC).
  for (size_t i = 0; i < file.size(); i += 7) {
    std::vector<uint8_t> f = file;
    f[i] ^= 0x5A;
    CHECK_THROWS(Tokenizer::from_bytes(f.data(), f.size()), FormatError);
  }
  std::vector<uint8_t> huge = file;
  huge[41] = huge[42] = huge[43] = huge[44] = 0xFF;  // first token's length field: 4 GiB
  CHECK_THROWS(Tokenizer::from_bytes(huge.data(), huge.size()), FormatError);
  std::vector<uint8_t> count = file;
  count[32] = count[33] = count[34] = count[35] = 0xFF;  // 4 G tokens
  CHECK_THROWS(Tokenizer::from_bytes(count.data(), count.size()), FormatError);
  const Tokenizer b = Tokenizer::bytes(300);
  const std::vector<uint8_t> bf = b.to_bytes();
  CHECK(Tokenizer::from_bytes(bf.data(), bf.size()).encode("\xFFq") == b.encode("\xFFq"));
}

BLUELM_TEST(chat_format_chatml) {
  ChatFormat f;
  f.has_default_system = true;
  f.default_system = "You are helpful";
  const std::vector<ChatMessage> user = {{"user", "Hi"}};
  CHECK(format_chat(f, user, true) ==
        "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<ChatMessage> sys = {{"system", "S"}, {"user", "Q"}, {"assistant", "A"}};
  CHECK(format_chat(f, sys, false) ==
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n");
  CHECK(format_chat(f, {}, true) == "<|im_start|>assistant\n");
  f.has_default_system = false;
  f.prologue = "<bos>";
  CHECK(format_chat(f, user, false) == "<bos><|im_start|>user\nHi<|im_end|>\n");
  CHECK_THROWS(format_chat(f, {{"", "x"}}, false), InvalidArgument);
}

BLUELM_TEST(bpe_bytes_missing_from_vocab_are_dropped) {
  // SmolLM2's vocabulary has no token for 21 bytes (0x04, 0xC0, 0xFF, ...): HF's BPE drops them, so do we.
  Spec s = tiny_bpe_spec();
  s.tokens[4 + 0x04] = "<gone>";
  s.types[4 + 0x04] = TokenType::unused;
  const Tokenizer t(s);
  CHECK(t.encode("a\x04" "b", {false, true}) == ids_of(t, {"a", "b"}));
  CHECK(t.encode("\x04\x04", {false, true}).empty());
  // Inside one piece the neighbours of a dropped byte become adjacent and may merge.
  CHECK(t.encode("!\x04?", {false, true}) == ids_of(t, {"!", "?"}));
  CHECK(t.token_to_piece(4 + 0x04) == "<gone>");
  Spec b = Tokenizer::bytes().spec();
  b.types[8 + 0x41] = TokenType::normal;
  CHECK_THROWS(Tokenizer(b), FormatError);  // the bytes model needs all 256
}
