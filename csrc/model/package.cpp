#include "model/package.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "model/guard.h"

namespace bluelm::model {

namespace {
using nlohmann::json;

constexpr int64_t kMaxManifestBytes = int64_t(64) << 20;
constexpr int64_t kMaxElements = int64_t(1) << 40;

const json& member(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) throw FormatError(cat(where, ": missing field '", key, "'"));
  return *it;
}

int64_t nonneg_int(const json& v, const std::string& where) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0) throw FormatError(cat(where, " must be a non-negative integer"));
  return v.get<int64_t>();
}

std::string dims(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

void check_finite(const TensorInfo& t, const std::string& at);

TensorInfo parse_tensor(const std::string& name, const json& t, const std::string& where, const Mapping& map) {
  const std::string at = cat(where, ": tensor '", name, "'");
  if (!t.is_object()) throw FormatError(cat(at, " must be an object"));
  TensorInfo info;
  info.name = name;
  const json& fmt = member(t, "format", at);
  if (!fmt.is_string()) throw FormatError(cat(at, ": format must be a string"));
  const std::string f = fmt.get<std::string>();
  if (f == "f32") {
    info.is_f32 = true;
  } else {
    info.is_f32 = false;
    try {
      info.format = quant::parse_format(f);
    } catch (const InvalidArgument& e) {
      throw FormatError(cat(at, ": ", e.what()));
    }
  }
  const json& shape = member(t, "shape", at);
  if (!shape.is_array() || shape.empty() || shape.size() > 4) throw FormatError(cat(at, ": shape must list 1 to 4 sizes"));
  int64_t elements = 1;
  for (const json& d : shape) {
    const int64_t v = nonneg_int(d, cat(at, ": each dimension"));
    if (v < 1 || v > kMaxElements || elements > kMaxElements / v)
      throw FormatError(cat(at, ": shape ", shape.dump(), " is empty or too large"));
    elements *= v;
    info.shape.push_back(v);
  }
  info.offset = nonneg_int(member(t, "offset", at), cat(at, ": offset"));
  info.bytes = nonneg_int(member(t, "bytes", at), cat(at, ": bytes"));
  int64_t expected = 0;
  if (info.is_f32) {
    expected = elements * 4;
    info.stored_k = info.cols();
  } else {
    if (info.shape.size() != 2) throw FormatError(cat(at, ": quantized tensors must be matrices, got shape ", shape.dump()));
    const int group = quant::format_info(info.format).group;
    info.stored_k = t.contains("stored_k") ? nonneg_int(t["stored_k"], cat(at, ": stored_k")) : info.shape[1];
    if (info.stored_k < info.shape[1] || info.stored_k % group || info.stored_k - info.shape[1] >= group)
      throw FormatError(cat(at, ": stored_k ", info.stored_k, " must be shape[1] = ", info.shape[1],
                            " rounded up to a multiple of ", group));
    expected = info.shape[0] * quant::row_bytes(info.format, info.stored_k);
  }
  if (info.bytes != expected)
    throw FormatError(cat(at, ": ", info.bytes, " bytes do not match ", f, " ", dims(info.shape), " (", expected, ")"));
  if (info.offset % kTensorAlignment) throw FormatError(cat(at, ": offset ", info.offset, " is not 64-byte aligned"));
  if (info.offset > map.size() || info.bytes > map.size() - info.offset)
    throw FormatError(cat(at, ": bytes [", info.offset, ", ", info.offset + info.bytes, ") run past the end of the ",
                          map.size(), "-byte weights file"));
  info.data = map.data() + info.offset;
  check_finite(info, at);
  map.release(info.offset, info.bytes);  // the check paged the tensor in; whoever uses it pages it in again
  return info;
}

// Every float a tensor's values are scaled by must be finite: one NaN scale turns a whole block, and then every
// activation downstream, into NaN (the engine then emits token 0 forever).
void check_finite(const TensorInfo& t, const std::string& at) {
  if (t.is_f32) {
    const int64_t n = t.bytes / 4;
    for (int64_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, t.data + 4 * i, 4);
      if (!std::isfinite(v)) throw FormatError(cat(at, ": value ", i, " is ", v, " (every value must be finite)"));
    }
    return;
  }
  const quant::FormatInfo& fi = quant::format_info(t.format);
  const int64_t blocks = t.bytes / fi.block_bytes;
  for (int64_t b = 0; b < blocks; ++b)
    for (int field = 0; field < 2; ++field) {
      const int off = fi.fp16_at[field];
      if (off < 0) continue;
      // fp16 with every exponent bit set is an infinity or a NaN.
      if ((quant::load_u16(t.data + b * fi.block_bytes + off) & 0x7C00) == 0x7C00)
        throw FormatError(cat(at, ": block ", b, " (row ", b * fi.group / t.stored_k, ") has a non-finite ",
                              field == 0 ? "scale" : "minimum", " (every scale must be finite)"));
    }
}

// No two tensors may share bytes: an offset pointing into another tensor would silently run the model with
// other weights.
void check_disjoint(const std::map<std::string, TensorInfo>& tensors, const std::string& where) {
  std::vector<const TensorInfo*> order;
  for (const auto& [name, t] : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const TensorInfo& a = *order[i - 1];
    const TensorInfo& b = *order[i];
    if (b.offset < a.offset + a.bytes)
      throw FormatError(cat(where, ": tensor '", b.name, "' offset ", b.offset, " lies inside tensor '", a.name,
                            "' (bytes [", a.offset, ", ", a.offset + a.bytes, "))"));
  }
}

}  // namespace

int64_t TensorInfo::cols() const {
  int64_t c = 1;
  for (size_t i = 1; i < shape.size(); ++i) c *= shape[i];
  return c;
}

std::string TensorInfo::describe() const {
  return cat(is_f32 ? "f32" : quant::format_name(format), " ", dims(shape));
}

Mapping::Mapping(const std::string& path) {
  const int fd = open_regular(path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw FormatError(cat(path, ": cannot stat"));
  }
  size_ = int64_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw FormatError(cat(path, ": cannot memory-map (", std::strerror(errno), ")"));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

Mapping::~Mapping() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_t(size_));
}

void Mapping::release(int64_t offset, int64_t n) const {
  if (!data_ || n <= 0) return;
  const int64_t page = int64_t(::sysconf(_SC_PAGESIZE));
  const int64_t begin = (offset + page - 1) / page * page, end = (offset + n) / page * page;
  if (end > begin) ::madvise(const_cast<uint8_t*>(data_) + begin, size_t(end - begin), MADV_DONTNEED);
}

std::shared_ptr<Package> Package::open(const std::string& dir) {
  auto pkg = std::shared_ptr<Package>(new Package());
  pkg->dir_ = dir;
  const std::string mpath = dir + "/manifest.json";
  json m;
  const std::string text = read_regular(mpath, kMaxManifestBytes);
  check_json_text(text, mpath);
  try {
    m = json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(cat(mpath, ": not valid JSON (", e.what(), ")"));
  }
  if (!m.is_object()) throw FormatError(cat(mpath, ": must hold a JSON object"));
  const json& fmt = member(m, "format", mpath);
  if (fmt != kPackageFormatName) throw FormatError(cat(mpath, ": format is ", fmt.dump(), ", expected \"", kPackageFormatName, "\""));
  const json& ver = member(m, "format_version", mpath);
  if (!ver.is_number_integer() || ver.get<int64_t>() != kPackageFormatVersion)
    throw FormatError(cat(mpath, ": format_version ", ver.dump(), " is not supported (this engine reads ",
                          kPackageFormatVersion, ")"));
  pkg->source_ = m.value("source", std::string());
  pkg->config_ = parse_model_config(member(m, "model", mpath).dump(), mpath);

  // Tokenizer and chat format.
  const json& tok = member(m, "tokenizer", mpath);
  if (!tok.is_object()) throw FormatError(cat(mpath, ": tokenizer must be an object"));
  const json& tfile = member(tok, "file", mpath + ": tokenizer");
  if (!tfile.is_string()) throw FormatError(cat(mpath, ": tokenizer.file must be a file name inside the package"));
  const std::string tpath = path_inside(dir, tfile.get<std::string>(), "tokenizer.file");
  const std::string tbytes = read_regular(tpath, int64_t(1) << 30);
  try {
    pkg->tokenizer_ = std::make_unique<tokenizer::Tokenizer>(
        tokenizer::Tokenizer::from_bytes(reinterpret_cast<const uint8_t*>(tbytes.data()), tbytes.size()));
  } catch (const std::invalid_argument& e) {
    throw FormatError(cat(tpath, ": ", e.what()));
  }
  const int32_t n_vocab = pkg->tokenizer_->n_vocab();
  if (n_vocab > pkg->config_.llm.vocab)
    throw FormatError(cat(mpath, ": the tokenizer has ", n_vocab, " tokens, more than the model's vocab of ",
                          pkg->config_.llm.vocab));
  if (tok.contains("eos_ids")) {
    if (!tok["eos_ids"].is_array()) throw FormatError(cat(mpath, ": tokenizer.eos_ids must be a list"));
    for (const json& e : tok["eos_ids"]) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= n_vocab)
        throw FormatError(cat(mpath, ": tokenizer.eos_ids holds ", e.dump(), ", not a token id"));
      pkg->eos_ids_.push_back(e.get<int32_t>());
    }
  }
  pkg->add_bos_ = tok.value("add_bos", false);
  if (tok.contains("chat")) {
    const json& c = tok["chat"];
    if (!c.is_object()) throw FormatError(cat(mpath, ": tokenizer.chat must be an object"));
    auto str = [&](const char* key, std::string& out) {
      if (!c.contains(key)) return;
      if (!c[key].is_string()) throw FormatError(cat(mpath, ": tokenizer.chat.", key, " must be a string"));
      out = c[key].get<std::string>();
    };
    str("prologue", pkg->chat_.prologue);
    str("turn_prefix", pkg->chat_.turn_prefix);
    str("turn_suffix", pkg->chat_.turn_suffix);
    str("default_system", pkg->chat_.default_system);
    str("generation_prompt", pkg->chat_.generation_prompt);
    if (c.contains("has_default_system")) {
      if (!c["has_default_system"].is_boolean())
        throw FormatError(cat(mpath, ": tokenizer.chat.has_default_system must be true or false"));
      pkg->chat_.has_default_system = c["has_default_system"].get<bool>();
    }
  }

  // Weights.
  const json& w = member(m, "weights", mpath);
  if (!w.is_object()) throw FormatError(cat(mpath, ": weights must be an object"));
  const json& wfile = member(w, "file", mpath + ": weights");
  if (!wfile.is_string()) throw FormatError(cat(mpath, ": weights.file must be a file name inside the package"));
  const std::string wpath = path_inside(dir, wfile.get<std::string>(), "weights.file");
  pkg->weights_ = std::make_unique<Mapping>(wpath);
  if (w.contains("bytes")) {
    const int64_t want = nonneg_int(w["bytes"], mpath + ": weights.bytes");
    if (want != pkg->weights_->size())
      throw FormatError(cat(wpath, ": ", pkg->weights_->size(), " bytes, the manifest says ", want,
                            " (truncated or replaced?)"));
  }
  const json& tensors = member(m, "tensors", mpath);
  if (!tensors.is_object()) throw FormatError(cat(mpath, ": tensors must be an object"));
  for (auto it = tensors.begin(); it != tensors.end(); ++it)
    pkg->tensors_.emplace(it.key(), parse_tensor(it.key(), it.value(), mpath, *pkg->weights_));
  check_disjoint(pkg->tensors_, mpath);
  return pkg;
}

const TensorInfo& Package::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw FormatError(cat(dir_, "/manifest.json: names no tensor '", name, "'"));
  return it->second;
}

const TensorInfo& Package::tensor(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorInfo& t = tensor(name);
  int64_t want = 1, got = 1;
  for (int64_t d : shape) want *= d;
  for (int64_t d : t.shape) got *= d;
  // Conv weights may be stored [out, c, p, p] and read as [out, c*p*p]: compare the leading size and the total.
  if (t.shape.empty() || shape.empty() || t.shape[0] != shape[0] || want != got)
    throw FormatError(cat(dir_, "/manifest.json: tensor '", name, "' has shape ", dims(t.shape), ", the model needs ",
                          dims(shape)));
  return t;
}

}  // namespace bluelm::model
