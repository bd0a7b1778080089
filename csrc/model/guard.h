#pragma once
// Guards the package reader puts in front of every file and every JSON text it reads (docs/reliability.md):
// only regular files inside the package folder are opened (a FIFO would block open() forever, a device or a
// symlink out of the folder reads something else), and JSON is checked to be UTF-8 and shallow before it is
// parsed (nlohmann's dump() and the readers recurse once per level). Errors name the file and the field.
#include <cstdint>
#include <string>

namespace bluelm::model {

constexpr int kMaxJsonDepth = 64;  // the manifest nests 4 deep; 64 leaves room and keeps recursion shallow

// `dir`/`name` for the manifest field `field` ("weights.file"): FormatError unless `name` is a plain file name
// whose real path (symlinks resolved) lies inside the real path of `dir`.
std::string path_inside(const std::string& dir, const std::string& name, const std::string& field);

// A file descriptor open for reading on `path`, which must be a regular file (FormatError otherwise). Opened
// non-blocking, so a FIFO is refused at once instead of waiting for a writer. The caller closes it.
int open_regular(const std::string& path);

// The whole of regular file `path`, refused with LimitError naming the file when it holds more than `limit` bytes.
std::string read_regular(const std::string& path, int64_t limit);

// FormatError naming `where` unless `text` is well-formed UTF-8 JSON nested at most kMaxJsonDepth deep
// (checked by one linear scan, before any parser sees it).
void check_json_text(const std::string& text, const std::string& where);

// Bytes this process may allocate: physical memory, lowered by RLIMIT_AS / RLIMIT_DATA when they are set. Sizes
// read from files are checked against it before anything is allocated.
int64_t memory_budget_bytes();

}  // namespace bluelm::model
