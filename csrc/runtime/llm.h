#pragma once
// The LLaMA-family decoder of the engine (GQA, RoPE, RMSNorm, SwiGLU, tied or untied head), with the flags the
// families need (model/config.h): biases on Q/K/V (Qwen2), linear and llama3 RoPE scaling. Bit-for-bit the same
// arithmetic order as bluelm_v/models/llm.py except where the weights are quantized (csrc/kernels: int8
// activations) and where the KV cache is int8.
//
// The KV cache and its layouts: runtime/kv_cache.h.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "model/package.h"
#include "runtime/attention.h"
#include "runtime/kv_cache.h"
#include "runtime/linear.h"
#include "runtime/ops.h"

namespace bluelm::runtime {

// Where the LLM's decode steps spend their time, op by op (Session::start_profile). Each op is timed on the calling
// thread from its start to its end (a parallel product: to its last worker's end), so the ops and the rest of the
// step add up to the step's wall time. bytes: what the op reads from memory per call, summed over the calls: a
// product's weights (its packed copy, or f32 weights and bias), attention's KV cache entries.
struct OpProfile {
  std::string op;      // qkv | q | k | v | o | gate_up | gate | up | down | head | attention | rms_norm |
                       // rope_kv_store | residual | swiglu
  std::string format;  // the product's weight format ("q4_k", "f32"); "" for ops without weights
  int64_t calls = 0;
  double seconds = 0;
  int64_t bytes = 0;
};

struct StepProfile {
  std::vector<OpProfile> ops;  // in the order a step first ran them
  int64_t steps = 0;           // whole decode steps (token embedding and logits included)
  double seconds = 0;          // their wall time
  void add(const char* op, const std::string& format, double seconds, int64_t bytes);
};

// Per-request working memory of the LLM (activations of one chunk), sized for chunks of up to max_t positions.
struct LlmWorkspace {
  int64_t max_t = 0;
  std::vector<float> h, xn, q, k, v, att, tmp, gate, up, logits_row;
  DecodeScratch decode;
  std::vector<float> qkv, gate_up;  // outputs of the stacked products [max_t, q + 2 kv], [max_t, 2 * ffn]
  kernels::Scratch scratch;
  StepProfile* profile = nullptr;  // when set, forward() adds each op's time to it
};

class Llm {
 public:
  Llm(const model::Package& pkg, int64_t max_positions, Activations act = Activations::int8);
  Activations activations() const { return act_; }
  const model::LlmConfig& config() const { return cfg_; }
  KvCache new_cache(KvType type, int64_t capacity) const;
  LlmWorkspace new_workspace(int64_t max_t) const;
  int64_t resident_bytes() const;
  // Products the layers run stacked (Q/K/V and gate/up, Linear::can_stack): 2 per layer when all stack.
  int64_t stacked_products() const;

  // Token embeddings: ids [t] -> out [t, hidden] (ids checked against the vocabulary).
  void embed(const int32_t* ids, int64_t t, float* out) const;
  // One chunk of t positions after cache.length(): x [t, hidden] embeddings. logits [vocab] of the last position
  // when `logits` is not null; all_logits [t, vocab] when not null (for tests). `decoding`: a generation step
  // (t = 1). It no longer changes the arithmetic: over an int8 cache decode and prefill chunks of any length both
  // compute attention in integers (runtime/attention.h), so any split of a prompt gives the same logits.
  void forward(const float* x, int64_t t, KvCache& cache, LlmWorkspace& ws, float* logits,
               float* all_logits = nullptr, bool decoding = false) const;

 private:
  struct Layer {
    const float *attn_norm = nullptr, *mlp_norm = nullptr;
    Linear q, k, v, o, gate, up, down;
    Linear qkv, gate_up;  // Q, K, V and gate, up stacked (Linear::can_stack); then q, k, v, gate, up are empty
    bool stacked_qkv = false, stacked_gate_up = false;
  };
  // Queries q [t, heads * head_dim] with rows ldq floats apart; output into ws.att.
  void attention(int64_t layer, int64_t start, int64_t t, const float* q, int64_t ldq, const KvCache& cache,
                 LlmWorkspace& ws, bool decoding) const;

  model::LlmConfig cfg_;
  const model::TensorInfo* embed_ = nullptr;
  std::vector<Layer> layers_;
  const float* norm_ = nullptr;
  Linear lm_head_;
  Rope rope_;
  Activations act_ = Activations::int8;
};

}  // namespace bluelm::runtime
