#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "tokenizer/unicode.h"

namespace bluelm::tokenizer {

namespace {
constexpr size_t kMaxVocab = size_t(1) << 24;
constexpr size_t kMaxTokenBytes = size_t(1) << 16;
constexpr size_t kCacheEntries = size_t(1) << 16;  // BPE results of pieces seen before (cleared when full)
constexpr size_t kCachePieceBytes = 256;             // longer pieces are rare: not cached

std::string show(std::string_view s) {  // a token for an error message: quoted, control bytes escaped
  std::string out = "'";
  for (const char c : s.substr(0, 64)) {
    if (uint8_t(c) < 0x20 || c == 0x7F)
      out += cat("\\x", "0123456789abcdef"[uint8_t(c) >> 4], "0123456789abcdef"[uint8_t(c) & 15]);
    else
      out += c;
  }
  return out + (s.size() > 64 ? "...'" : "'");
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xHH>" -> HH, or -1.
int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  const int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

struct Merge {
  int32_t rank, result;
};
uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
}  // namespace

const char* model_name(Model m) { return m == Model::bytes ? "bytes" : "byte_level_bpe"; }

const char* pre_tokenizer_name(PreTokenizer p) {
  switch (p) {
    case PreTokenizer::gpt2: return "gpt2";
    case PreTokenizer::smollm: return "smollm";
    default: return "none";
  }
}

Model parse_model(std::string_view name) {
  if (name == "byte_level_bpe" || name == "gpt2") return Model::byte_level_bpe;
  if (name == "bytes") return Model::bytes;
  throw InvalidArgument(cat("unknown tokenizer model '", name, "': expected byte_level_bpe (gpt2) or bytes"));
}

PreTokenizer parse_pre_tokenizer(std::string_view name) {
  if (name == "none") return PreTokenizer::none;
  if (name == "gpt2") return PreTokenizer::gpt2;
  if (name == "smollm") return PreTokenizer::smollm;
  throw InvalidArgument(cat("unknown pre-tokenizer '", name, "': expected none, gpt2 or smollm"));
}

std::pair<std::string, std::string> parse_merge(std::string_view line) {
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 0 || sp + 1 == line.size() || line.find(' ', sp + 1) != line.npos)
    throw FormatError(cat("merge ", show(line), " is not two tokens separated by one space"));
  return {std::string(line.substr(0, sp)), std::string(line.substr(sp + 1))};
}

struct Tokenizer::Impl {
  Spec spec;
  std::vector<std::string> pieces;                    // [n_vocab] bytes of each token
  std::unordered_map<std::string_view, int32_t> ids;  // token text -> id (views into spec.tokens)
  std::array<int32_t, 256> byte_ids{};                // the token of each single byte
  std::unordered_map<uint64_t, Merge> merges;         // (left id, right id) -> rank, merged id
  std::array<std::vector<int32_t>, 256> matchable;    // control / user-defined tokens by first byte, longest first
  std::mutex cache_mu;
  std::unordered_map<std::string, std::vector<int32_t>> cache;

  explicit Impl(Spec s);
  void check_sizes() const;
  void index_tokens();
  void build_pieces();
  void build_byte_ids();
  void build_merges();
  void build_matchable();
  void check_special_ids() const;

  void encode_plain(std::string_view text, std::vector<int32_t>& out);
  void bpe_piece(std::string_view piece, std::vector<int32_t>& out) const;
};

Tokenizer::Impl::Impl(Spec s) : spec(std::move(s)) {
  check_sizes();
  index_tokens();
  build_pieces();
  build_byte_ids();
  build_merges();
  build_matchable();
  check_special_ids();
}

void Tokenizer::Impl::check_sizes() const {
  const size_t n = spec.tokens.size();
  if (n == 0) throw FormatError("tokenizer has an empty vocabulary");
  if (n > kMaxVocab) throw LimitError(cat("vocabulary of ", n, " tokens is over the limit of ", kMaxVocab));
  if (spec.merges.size() > kMaxVocab)
    throw LimitError(cat(spec.merges.size(), " merges are over the limit of ", kMaxVocab));
  if (!spec.types.empty() && spec.types.size() != n)
    throw FormatError(cat("token types has ", spec.types.size(), " entries for ", n, " tokens"));
  for (size_t i = 0; i < spec.types.size(); ++i) {
    const auto t = uint8_t(spec.types[i]);
    if (t < 1 || t > 6) throw FormatError(cat("token ", i, " has unknown type ", int(t), " (expected 1..6)"));
  }
  if (spec.model == Model::bytes && (spec.pre != PreTokenizer::none || !spec.merges.empty()))
    throw FormatError("the bytes model takes no pre-tokenizer and no merges");
}

void Tokenizer::Impl::index_tokens() {
  ids.reserve(spec.tokens.size());
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    const std::string& t = spec.tokens[i];
    if (t.empty()) throw FormatError(cat("token ", i, " is empty"));
    if (t.size() > kMaxTokenBytes) throw LimitError(cat("token ", i, " has ", t.size(), " bytes, over the limit"));
    if (utf8_lossy(t) != t) throw FormatError(cat("token ", i, " is not valid UTF-8"));
    const auto [it, fresh] = ids.emplace(std::string_view(t), int32_t(i));
    if (!fresh) throw FormatError(cat("token ", show(t), " appears twice (ids ", it->second, " and ", i, ")"));
  }
}

void Tokenizer::Impl::build_pieces() {
  pieces.resize(spec.tokens.size());
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    const std::string& t = spec.tokens[i];
    const TokenType type = spec.types.empty() ? TokenType::normal : spec.types[i];
    if (type == TokenType::byte) {
      const int b = byte_token_value(t);
      if (b < 0) throw FormatError(cat("byte token ", i, " is ", show(t), ", not <0xHH>"));
      pieces[i] = std::string(1, char(b));
    } else if (type == TokenType::normal && spec.model == Model::byte_level_bpe) {
      // GPT-2 alphabet back to bytes; a character outside it stands for itself (as HF's ByteLevel decoder).
      for (size_t k = 0; k < t.size();) {
        const Utf8Step st = utf8_step(t, k);
        const int b = codepoint_to_byte(st.cp);
        if (b >= 0)
          pieces[i] += char(b);
        else
          pieces[i].append(t, k, st.len);
        k += st.len;
      }
    } else {
      pieces[i] = t;  // control, user-defined, unknown, unused: their text
    }
  }
}

void Tokenizer::Impl::build_byte_ids() {
  byte_ids.fill(-1);
  if (spec.model == Model::bytes) {
    for (size_t i = 0; i < spec.tokens.size(); ++i) {
      if (spec.types.empty() || spec.types[i] != TokenType::byte) continue;
      const auto b = uint8_t(pieces[i][0]);
      if (byte_ids[b] >= 0) throw FormatError(cat("byte 0x", std::hex, int(b), " has two tokens"));
      byte_ids[b] = int32_t(i);
    }
  } else {
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      utf8_append(ch, byte_to_codepoint()[b]);
      const auto it = ids.find(ch);
      if (it != ids.end()) byte_ids[b] = it->second;
    }
  }
  // A byte-level vocabulary may lack bytes that never occurred in its training text (SmolLM2 lacks 21, e.g.
  // 0x04, 0xC0, 0xFF): encoding drops them, as HF's BPE without an unk_token does. The bytes model needs all.
  if (spec.model == Model::bytes)
    for (int b = 0; b < 256; ++b)
      if (byte_ids[b] < 0) throw FormatError(cat("the byte vocabulary has no token for byte 0x", std::hex, b));
}

void Tokenizer::Impl::build_merges() {
  merges.reserve(spec.merges.size());
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    const auto& [a, b] = spec.merges[r];
    const auto ia = ids.find(a), ib = ids.find(b), iab = ids.find(a + b);
    if (ia == ids.end() || ib == ids.end())
      throw FormatError(cat("merge ", r, " (", show(a), " ", show(b), ") refers to a token not in the vocabulary"));
    if (iab == ids.end())
      throw FormatError(cat("merge ", r, " (", show(a), " ", show(b), ") makes ", show(a + b),
                            ", which is not in the vocabulary"));
    merges.emplace(pair_key(ia->second, ib->second), Merge{int32_t(r), iab->second});  // first (best) rank wins
  }
}

void Tokenizer::Impl::build_matchable() {
  if (spec.types.empty()) return;
  for (size_t i = 0; i < spec.tokens.size(); ++i)
    if (spec.types[i] == TokenType::control || spec.types[i] == TokenType::user_defined)
      matchable[uint8_t(spec.tokens[i][0])].push_back(int32_t(i));
  for (auto& v : matchable)
    std::stable_sort(v.begin(), v.end(),
                     [&](int32_t x, int32_t y) { return spec.tokens[x].size() > spec.tokens[y].size(); });
}

void Tokenizer::Impl::check_special_ids() const {
  const int64_t n = int64_t(spec.tokens.size());
  const std::pair<const char*, int32_t> named[] = {
      {"bos", spec.bos_id}, {"eos", spec.eos_id}, {"pad", spec.pad_id}, {"unk", spec.unk_id}};
  for (const auto& [name, id] : named)
    if (id < -1 || id >= n) throw FormatError(cat(name, " id ", id, " is outside the vocabulary of ", n));
  if (spec.add_bos && spec.bos_id < 0) throw FormatError("add_bos is set but there is no bos id");
  if (spec.add_eos && spec.eos_id < 0) throw FormatError("add_eos is set but there is no eos id");
}

void Tokenizer::Impl::bpe_piece(std::string_view piece, std::vector<int32_t>& out) const {
  // Lowest-rank adjacent pair first, leftmost among equals (HF's order), with a heap of candidate pairs that
  // are checked when popped: O(n log n) in the piece length.
  struct Sym {
    int32_t id, prev, next;
  };
  struct Cand {
    int32_t rank, pos, left, right;
    bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Sym> syms;
  syms.reserve(piece.size());
  for (const char c : piece) {
    const int32_t id = byte_ids[uint8_t(c)];
    if (id < 0) continue;  // a byte the vocabulary lacks is dropped
    const int32_t i = int32_t(syms.size());
    syms.push_back({id, i - 1, i + 1});
  }
  const int32_t n = int32_t(syms.size());
  if (n == 0) return;
  syms.back().next = -1;
  std::priority_queue<Cand> heap;
  auto consider = [&](int32_t pos) {
    if (pos < 0 || syms[pos].next < 0) return;
    const auto it = merges.find(pair_key(syms[pos].id, syms[syms[pos].next].id));
    if (it != merges.end()) heap.push({it->second.rank, pos, syms[pos].id, syms[syms[pos].next].id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& l = syms[c.pos];
    if (l.id != c.left || l.next < 0 || syms[l.next].id != c.right) continue;  // stale
    Sym& r = syms[l.next];
    l.id = merges.at(pair_key(c.left, c.right)).result;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.pos;
    r.id = -1;
    consider(l.prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& out) {
  if (spec.model == Model::bytes) {
    for (const char c : text) out.push_back(byte_ids[uint8_t(c)]);
    return;
  }
  std::vector<Piece> cut;
  pretokenize(text, spec.pre, cut);
  for (const Piece& p : cut) {
    const std::string_view piece = text.substr(p.begin, p.end - p.begin);
    if (piece.size() > kCachePieceBytes) {
      bpe_piece(piece, out);
      continue;
    }
    std::string key(piece);
    {
      std::lock_guard<std::mutex> lock(cache_mu);
      const auto it = cache.find(key);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    std::vector<int32_t> ids_of_piece;
    bpe_piece(piece, ids_of_piece);
    out.insert(out.end(), ids_of_piece.begin(), ids_of_piece.end());
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() >= kCacheEntries) cache.clear();
    cache.emplace(std::move(key), std::move(ids_of_piece));
  }
}

Tokenizer::Tokenizer(Spec spec) : impl_(std::make_shared<Impl>(std::move(spec))) {}

Tokenizer Tokenizer::bytes(int32_t vocab_size) {
  if (vocab_size < kByteMinVocab || size_t(vocab_size) > kMaxVocab)
    throw InvalidArgument(cat("byte tokenizer vocab_size ", vocab_size, " must be in [", kByteMinVocab, ", ",
                              kMaxVocab, "]"));
  Spec s;
  s.model = Model::bytes;
  s.pre = PreTokenizer::none;
  s.tokens = {"<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>", "<image>", "<|reserved_6|>",
              "<|reserved_7|>"};
  s.types.assign(s.tokens.size(), TokenType::control);
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    s.tokens.push_back(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
    s.types.push_back(TokenType::byte);
  }
  for (int32_t i = kByteMinVocab; i < vocab_size; ++i) {
    s.tokens.push_back(cat("<|reserved_", i, "|>"));
    s.types.push_back(TokenType::control);
  }
  s.bos_id = kByteBos, s.eos_id = kByteEos, s.pad_id = kBytePad;
  s.add_bos = true;
  return Tokenizer(std::move(s));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& opt) const {
  if (text.size() >= size_t(UINT32_MAX)) throw LimitError(cat("text of ", text.size(), " bytes is too long"));
  Impl& im = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (opt.add_special && im.spec.add_bos) out.push_back(im.spec.bos_id);
  size_t seg = 0;
  for (size_t i = 0; i < text.size();) {
    int32_t hit = -1;
    for (const int32_t id : im.matchable[uint8_t(text[i])]) {
      if (!opt.parse_special && im.spec.types[id] == TokenType::control) continue;
      const std::string& t = im.spec.tokens[id];
      if (text.compare(i, t.size(), t) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    im.encode_plain(text.substr(seg, i - seg), out);
    out.push_back(hit);
    i += im.spec.tokens[hit].size();
    seg = i;
  }
  im.encode_plain(text.substr(seg), out);
  if (opt.add_special && im.spec.add_eos) out.push_back(im.spec.eos_id);
  return out;
}

void Tokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= n_vocab())
    throw InvalidArgument(cat("token id ", id, " is outside the vocabulary [0, ", n_vocab(), ")"));
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (const int32_t id : ids) {
    check_id(id);
    if (skip_special && is_control(id)) continue;
    out += impl_->pieces[size_t(id)];
  }
  return out;
}

std::string Tokenizer::decode_text(const std::vector<int32_t>& ids, bool skip_special) const {
  return utf8_lossy(decode(ids, skip_special));
}

const std::string& Tokenizer::token_to_piece(int32_t id) const {
  check_id(id);
  return impl_->pieces[size_t(id)];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return impl_->spec.tokens[size_t(id)];
}

TokenType Tokenizer::token_type(int32_t id) const {
  check_id(id);
  return impl_->spec.types.empty() ? TokenType::normal : impl_->spec.types[size_t(id)];
}

int32_t Tokenizer::token_to_id(std::string_view text) const {
  const auto it = impl_->ids.find(text);
  return it == impl_->ids.end() ? -1 : it->second;
}

int32_t Tokenizer::n_vocab() const { return int32_t(impl_->spec.tokens.size()); }
int32_t Tokenizer::bos_id() const { return impl_->spec.bos_id; }
int32_t Tokenizer::eos_id() const { return impl_->spec.eos_id; }
int32_t Tokenizer::pad_id() const { return impl_->spec.pad_id; }
int32_t Tokenizer::unk_id() const { return impl_->spec.unk_id; }
const Spec& Tokenizer::spec() const { return impl_->spec; }

std::string StreamDecoder::push(int32_t id) {
  if (skip_ && tok_.is_control(id)) return {};
  pending_ += tok_.token_to_piece(id);
  const size_t ready = utf8_ready_prefix(pending_);
  std::string out = utf8_lossy(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace bluelm::tokenizer
