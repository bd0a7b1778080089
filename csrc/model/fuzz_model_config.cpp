// libFuzzer harness for the model config reader alone (built by `make fuzz`): the input is the manifest's "model"
// object as JSON text. parse_model_config must end in a config or a bluelm exception; a config it returns must hold
// the invariants the engine sizes buffers by, else abort.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bluelm::model;
  try {
    const ModelConfig c = parse_model_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
    const LlmConfig& l = c.llm;
    if (l.hidden < 1 || l.heads < 1 || l.kv_heads < 1 || l.heads % l.kv_heads || l.head_dim < 2 || l.head_dim % 2 ||
        l.vocab < 1 || l.max_context < 1 || c.deploy.chunk < 1 || c.deploy.tile_batch < 1)
      std::abort();
    if (c.multimodal && (c.vision.grid() < 1 || c.image_tokens_per_tile() < 1)) std::abort();
    (void)session_bytes(l, l.max_context, c.deploy.chunk);
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
