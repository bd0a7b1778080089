#include "model/guard.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/error.h"
#include "tokenizer/unicode.h"

namespace bluelm::model {

namespace {
std::string real_path(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> r(::realpath(path.c_str(), nullptr), &std::free);
  if (!r) throw FormatError(cat(path, ": cannot open (", std::strerror(errno), ")"));
  return std::string(r.get());
}
}  // namespace

std::string path_inside(const std::string& dir, const std::string& name, const std::string& field) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    throw FormatError(cat(dir, "/manifest.json: ", field, " must be a file name inside the package, got '", name, "'"));
  const std::string path = dir + "/" + name;
  const std::string root = real_path(dir), target = real_path(path);
  // A symlink may point elsewhere inside the package, never out of it.
  if (target.size() <= root.size() || target.compare(0, root.size(), root) != 0 || target[root.size()] != '/')
    throw FormatError(cat(dir, "/manifest.json: ", field, " '", name, "' leads to ", target,
                          ", outside the package folder"));
  return path;
}

int open_regular(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) throw FormatError(cat(path, ": cannot open (", std::strerror(errno), ")"));
  struct stat st {};
  const bool stated = ::fstat(fd, &st) == 0;
  if (!stated || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FormatError(cat(path, stated ? ": not a regular file (a FIFO, device, socket or folder cannot be part of "
                                         "a package)"
                                       : ": cannot stat"));
  }
  return fd;
}

std::string read_regular(const std::string& path, int64_t limit) {
  const int fd = open_regular(path);
  struct stat st {};
  ::fstat(fd, &st);
  if (int64_t(st.st_size) > limit) {
    ::close(fd);
    throw LimitError(cat(path, ": ", int64_t(st.st_size), " bytes exceeds the limit of ", limit));
  }
  std::string s(size_t(st.st_size), '\0');
  size_t got = 0;
  while (got < s.size()) {
    const ssize_t n = ::read(fd, s.data() + got, s.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  ::close(fd);
  if (got != s.size()) throw FormatError(cat(path, ": short read (", got, " of ", s.size(), " bytes; changed while read?)"));
  return s;
}

int64_t memory_budget_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  int64_t budget = pages > 0 && page > 0 ? int64_t(pages) * int64_t(page) : INT64_MAX;
  for (const int res : {RLIMIT_AS, RLIMIT_DATA}) {
    struct rlimit rl {};
    if (::getrlimit(res, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && int64_t(rl.rlim_cur) > 0)
      budget = std::min<int64_t>(budget, int64_t(rl.rlim_cur));
  }
  return budget;
}

void check_json_text(const std::string& text, const std::string& where) {
  for (size_t i = 0; i < text.size();) {
    const tokenizer::Utf8Step st = tokenizer::utf8_step(text, i);
    if (st.kind != tokenizer::Utf8Step::complete)
      throw FormatError(cat(where, ": not UTF-8 text (invalid byte 0x", std::hex, int(uint8_t(text[i])), std::dec,
                            " at offset ", i, ")"));
    i += st.len;
  }
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        throw LimitError(cat(where, ": JSON nested deeper than ", kMaxJsonDepth, " levels (at offset ", i, ")"));
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;  // unbalanced brackets are the parser's to report
    }
  }
}

}  // namespace bluelm::model
