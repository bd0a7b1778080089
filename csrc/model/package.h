#pragma once
// A model package on disk (docs/engine.md): a folder holding
//   manifest.json   format name and version, the model config, the tokenizer and chat format, and one entry per
//                   tensor: {format: "f32" | a quant registry name, shape, stored_k, offset, bytes}
//   weights.bin     every tensor's bytes at its offset (64-byte aligned), memory-mapped read-only
//   tokenizer.bin   the tokenizer (csrc/tokenizer's binary format)
// Nothing read from the files is trusted: each tensor's offset, size and shape are checked against the format,
// the shape and the mapped file before a pointer is handed out, and every error names the file and the field.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "quant/quant.h"
#include "tokenizer/tokenizer.h"

namespace bluelm::model {

constexpr int kPackageFormatVersion = 1;
constexpr const char* kPackageFormatName = "bluelm-v-package";
constexpr int64_t kTensorAlignment = 64;

struct TensorInfo {
  std::string name;
  bool is_f32 = true;                      // float32 values; otherwise `format` rows
  quant::Format format = quant::Format::q8_0;
  std::vector<int64_t> shape;              // logical shape, torch order ([out, in] for matrices)
  int64_t stored_k = 0;                    // matrices: columns as stored (shape[1] padded up to the group size)
  int64_t offset = 0, bytes = 0;
  const uint8_t* data = nullptr;           // inside the mapping

  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const;                    // product of the dimensions after the first
  const float* f32() const { return reinterpret_cast<const float*>(data); }
  std::string describe() const;            // "q4_0 [576, 1536]"
};

// A read-only memory mapping of a whole file.
class Mapping {
 public:
  explicit Mapping(const std::string& path);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }
  // Tell the OS the bytes [offset, offset + n) will not be needed soon (drops them from this process's memory).
  void release(int64_t offset, int64_t n) const;

 private:
  const uint8_t* data_ = nullptr;
  int64_t size_ = 0;
};

class Package {
 public:
  static std::shared_ptr<Package> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  const tokenizer::ChatFormat& chat() const { return chat_; }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  bool add_bos() const { return add_bos_; }
  const std::string& source() const { return source_; }

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // The tensor `name`, checked to have `shape` (FormatError naming the package, tensor and mismatch otherwise).
  const TensorInfo& tensor(const std::string& name, const std::vector<int64_t>& shape) const;
  const TensorInfo& tensor(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const Mapping& mapping() const { return *weights_; }

 private:
  std::string dir_, source_;
  ModelConfig config_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  tokenizer::ChatFormat chat_;
  std::vector<int32_t> eos_ids_;
  bool add_bos_ = false;
  std::map<std::string, TensorInfo> tensors_;
  std::unique_ptr<Mapping> weights_;
};

}  // namespace bluelm::model
