#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace bluelm::tokenizer {

namespace {
std::string turn(const ChatFormat& f, const std::string& role, const std::string& content) {
  std::string out;
  const std::string_view prefix = f.turn_prefix;
  for (size_t i = 0; i < prefix.size();) {
    if (prefix.compare(i, 6, "{role}") == 0) {
      out += role;
      i += 6;
    } else {
      out += prefix[i++];
    }
  }
  return out + content + f.turn_suffix;
}
}  // namespace

std::string format_chat(const ChatFormat& fmt, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  std::string out = fmt.prologue;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role.empty()) throw InvalidArgument(cat("chat message ", i, " has no role"));
    if (i == 0 && fmt.has_default_system && messages[0].role != "system")
      out += turn(fmt, "system", fmt.default_system);
    out += turn(fmt, messages[i].role, messages[i].content);
  }
  if (add_generation_prompt) out += fmt.generation_prompt;
  return out;
}

}  // namespace bluelm::tokenizer
