// The tokenizer file (docs/tokenizer.md, "Serialisation"): little-endian, every length and count checked
// against the bytes present before it is used, a CRC-32 over the whole file.
//
//   magic "BLMVTOK\0" | u32 version = 1 | u8 model | u8 pre | u8 flags (bit 0 add_bos, bit 1 add_eos) | u8 0
//   | i32 bos, eos, pad, unk (-1: none) | u32 n_tokens | u32 n_merges
//   | n_tokens x (u8 type, u32 length, bytes) | n_merges x (u32 left id, u32 right id) | u32 CRC-32 of all before
#include <array>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace bluelm::tokenizer {

namespace {
constexpr char kMagic[8] = {'B', 'L', 'M', 'V', 'T', 'O', 'K', '\0'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 40;
constexpr uint64_t kMaxFileBytes = uint64_t(1) << 30;
constexpr uint32_t kMaxTokenBytes = uint32_t(1) << 16;

uint32_t crc32(const uint8_t* p, size_t n) {  // IEEE 802.3 (zlib's crc32)
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t left() const { return n_ - off_; }
  size_t offset() const { return off_; }
  void need(size_t k, const char* what) const {
    if (k > left())
      throw FormatError(cat("tokenizer file truncated: ", what, " needs ", k, " bytes at offset ", off_, " but ",
                            left(), " remain"));
  }
  uint8_t u8(const char* what) {
    need(1, what);
    return p_[off_++];
  }
  uint32_t u32(const char* what) {
    need(4, what);
    const uint8_t* q = p_ + off_;
    off_ += 4;
    return uint32_t(q[0]) | uint32_t(q[1]) << 8 | uint32_t(q[2]) << 16 | uint32_t(q[3]) << 24;
  }
  int32_t i32(const char* what) { return int32_t(u32(what)); }
  std::string bytes(size_t k, const char* what) {
    need(k, what);
    std::string s(reinterpret_cast<const char*>(p_ + off_), k);
    off_ += k;
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_, off_ = 0;
};

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int k = 0; k < 4; ++k) out.push_back(uint8_t(v >> (8 * k)));
}
}  // namespace

std::vector<uint8_t> Tokenizer::to_bytes() const {
  const Spec& s = spec();
  std::vector<uint8_t> out(kMagic, kMagic + 8);
  put_u32(out, kVersion);
  out.push_back(uint8_t(s.model));
  out.push_back(uint8_t(s.pre));
  out.push_back(uint8_t((s.add_bos ? 1 : 0) | (s.add_eos ? 2 : 0)));
  out.push_back(0);
  for (const int32_t id : {s.bos_id, s.eos_id, s.pad_id, s.unk_id}) put_u32(out, uint32_t(id));
  put_u32(out, uint32_t(s.tokens.size()));
  put_u32(out, uint32_t(s.merges.size()));
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    out.push_back(uint8_t(s.types.empty() ? TokenType::normal : s.types[i]));
    put_u32(out, uint32_t(s.tokens[i].size()));
    out.insert(out.end(), s.tokens[i].begin(), s.tokens[i].end());
  }
  for (const auto& [a, b] : s.merges) {
    put_u32(out, uint32_t(token_to_id(a)));
    put_u32(out, uint32_t(token_to_id(b)));
  }
  put_u32(out, crc32(out.data(), out.size()));
  return out;
}

Tokenizer Tokenizer::from_bytes(const uint8_t* data, size_t size) {
  if (size < kHeaderBytes + 4)
    throw FormatError(cat("tokenizer file truncated: ", size, " bytes, the header alone has ", kHeaderBytes + 4));
  if (std::memcmp(data, kMagic, 8) != 0) throw FormatError("not a bluelm-v tokenizer file (bad magic)");
  Reader r(data, size - 4);  // the CRC is the last 4 bytes
  r.bytes(8, "magic");
  const uint32_t version = r.u32("version");
  if (version != kVersion)
    throw FormatError(cat("tokenizer file version ", version, " is not supported (this build reads ", kVersion, ")"));
  Spec s;
  const uint8_t model = r.u8("model"), pre = r.u8("pre-tokenizer"), flags = r.u8("flags"), zero = r.u8("reserved");
  if (model != uint8_t(Model::byte_level_bpe) && model != uint8_t(Model::bytes))
    throw FormatError(cat("unknown tokenizer model code ", int(model)));
  if (pre > uint8_t(PreTokenizer::smollm)) throw FormatError(cat("unknown pre-tokenizer code ", int(pre)));
  if ((flags & ~3u) != 0 || zero != 0) throw FormatError("reserved header bits are set");
  s.model = Model(model);
  s.pre = PreTokenizer(pre);
  s.add_bos = flags & 1;
  s.add_eos = flags & 2;
  s.bos_id = r.i32("bos id"), s.eos_id = r.i32("eos id"), s.pad_id = r.i32("pad id"), s.unk_id = r.i32("unk id");
  const uint32_t n_tokens = r.u32("token count"), n_merges = r.u32("merge count");
  // Counts are checked against the bytes present (5 per token, 8 per merge at least) before anything is sized.
  if (uint64_t(n_tokens) * 5 + uint64_t(n_merges) * 8 > r.left())
    throw FormatError(cat("tokenizer file truncated or corrupt: ", n_tokens, " tokens and ", n_merges,
                          " merges cannot fit in the ", r.left(), " bytes left"));
  s.tokens.reserve(n_tokens);
  s.types.reserve(n_tokens);
  for (uint32_t i = 0; i < n_tokens; ++i) {
    const uint8_t type = r.u8("token type");
    if (type < 1 || type > 6) throw FormatError(cat("token ", i, " has unknown type ", int(type)));
    const uint32_t len = r.u32("token length");
    if (len > kMaxTokenBytes || len > r.left())
      throw FormatError(cat("token ", i, " claims ", len, " bytes at offset ", r.offset(), "; ", r.left(),
                            " remain (limit ", kMaxTokenBytes, ")"));
    s.types.push_back(TokenType(type));
    s.tokens.push_back(r.bytes(len, "token text"));
  }
  s.merges.reserve(n_merges);
  for (uint32_t m = 0; m < n_merges; ++m) {
    const uint32_t a = r.u32("merge"), b = r.u32("merge");
    if (a >= n_tokens || b >= n_tokens)
      throw FormatError(cat("merge ", m, " refers to token ", a >= n_tokens ? a : b, ", past the vocabulary of ",
                            n_tokens));
    s.merges.emplace_back(s.tokens[a], s.tokens[b]);
  }
  if (r.left() != 0) throw FormatError(cat(r.left(), " unexpected bytes after the merges"));
  const uint8_t* c = data + size - 4;
  const uint32_t stored = uint32_t(c[0]) | uint32_t(c[1]) << 8 | uint32_t(c[2]) << 16 | uint32_t(c[3]) << 24;
  if (stored != crc32(data, size - 4)) throw FormatError("tokenizer file checksum mismatch: the file is corrupt");
  return Tokenizer(std::move(s));
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw InvalidArgument(cat("cannot open tokenizer file ", path));
  const std::streamoff size = f.tellg();
  if (size < 0 || uint64_t(size) > kMaxFileBytes)
    throw LimitError(cat("tokenizer file ", path, " has ", size, " bytes, over the limit of ", kMaxFileBytes));
  std::vector<uint8_t> data(static_cast<size_t>(size));
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(data.data()), size)) throw FormatError(cat("cannot read ", path));
  try {
    return from_bytes(data.data(), data.size());
  } catch (const FormatError& e) {
    throw FormatError(cat(path, ": ", e.what()));
  }
}

void Tokenizer::save(const std::string& path) const {
  const std::vector<uint8_t> data = to_bytes();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f || !f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size())))
    throw InvalidArgument(cat("cannot write tokenizer file ", path));
}

}  // namespace bluelm::tokenizer
