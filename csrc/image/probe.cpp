// Container walkers for PNG, JPEG and WebP. Every length read from the file is checked against the bytes that
// are actually there before it is used.
#include <cstring>

#include "common/error.h"
#include "image/image.h"

namespace bluelm::image {

namespace {

uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
uint32_t be16(const uint8_t* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint32_t le24(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16); }

ImageInfo probe_png(const uint8_t* b, size_t n) {
  ImageInfo info{Format::png};
  size_t pos = 8;
  bool have_ihdr = false, have_idat = false;
  while (true) {
    if (n - pos < 12) throw FormatError(cat("truncated PNG: chunk header at offset ", pos, " runs past the end (", n, " bytes)"));
    const uint32_t len = be32(b + pos);
    if (len > 0x7fffffffu) throw FormatError(cat("corrupt PNG: chunk length ", len, " at offset ", pos));
    if (uint64_t(len) + 12 > n - pos)
      throw FormatError(cat("truncated PNG: chunk of ", len, " bytes at offset ", pos, " runs past the end (", n, " bytes)"));
    const uint8_t* type = b + pos + 4;
    const uint8_t* data = b + pos + 8;
    if (!have_ihdr) {
      if (std::memcmp(type, "IHDR", 4) != 0 || len != 13) throw FormatError("corrupt PNG: first chunk is not a 13-byte IHDR");
      info.width = be32(data);
      info.height = be32(data + 4);
      if (info.width == 0 || info.height == 0 || info.width > 0x7fffffff || info.height > 0x7fffffff)
        throw FormatError(cat("corrupt PNG: size ", info.width, "x", info.height));
      have_ihdr = true;
    } else if (std::memcmp(type, "IDAT", 4) == 0) {
      have_idat = true;
    } else if (std::memcmp(type, "IEND", 4) == 0) {
      if (!have_idat) throw FormatError("corrupt PNG: no image data (IDAT) before IEND");
      return info;
    }
    pos += size_t(len) + 12;
  }
}

bool is_sof(uint8_t m) {
  return (m >= 0xC0 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC;  // DHT, JPG, DAC are not frames
}

ImageInfo probe_jpeg(const uint8_t* b, size_t n) {
  ImageInfo info{Format::jpeg};
  size_t pos = 2;
  bool have_sof = false;
  while (true) {
    if (pos >= n) throw FormatError(cat("truncated JPEG: ends at offset ", n, " before the end-of-image marker"));
    if (b[pos] != 0xFF) throw FormatError(cat("corrupt JPEG: expected a marker at offset ", pos));
    while (pos < n && b[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) throw FormatError("truncated JPEG: ends inside a marker");
    const uint8_t m = b[pos++];
    if (m == 0xD9) {
      if (!have_sof) throw FormatError("corrupt JPEG: end-of-image before any frame header");
      return info;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // markers without a length
    if (m == 0xD8) throw FormatError(cat("corrupt JPEG: second start-of-image at offset ", pos - 2));
    if (n - pos < 2) throw FormatError("truncated JPEG: ends inside a segment length");
    const size_t len = be16(b + pos);
    if (len < 2) throw FormatError(cat("corrupt JPEG: segment length ", len, " at offset ", pos));
    if (len > n - pos) throw FormatError(cat("truncated JPEG: segment of ", len, " bytes at offset ", pos, " runs past the end"));
    if (is_sof(m)) {
      if (len < 8) throw FormatError("corrupt JPEG: short frame header");
      info.height = be16(b + pos + 3);
      info.width = be16(b + pos + 5);
      if (info.width == 0 || info.height == 0)
        throw FormatError(cat("unsupported JPEG: frame size ", info.width, "x", info.height, " (height from DNL is not supported)"));
      have_sof = true;
    }
    pos += len;
    if (m == 0xDA) {
      if (!have_sof) throw FormatError("corrupt JPEG: scan before any frame header");
      // Entropy-coded data: 0xFF is followed by 0x00 (stuffing), a restart marker, or the next marker.
      while (true) {
        if (pos + 1 >= n) throw FormatError("truncated JPEG: image data ends before the end-of-image marker");
        if (b[pos] != 0xFF) {
          ++pos;
          continue;
        }
        const uint8_t nx = b[pos + 1];
        if (nx == 0x00 || (nx >= 0xD0 && nx <= 0xD7)) {
          pos += 2;
        } else if (nx == 0xFF) {
          ++pos;
        } else {
          break;  // a real marker: back to the segment loop
        }
      }
    }
  }
}

ImageInfo probe_webp(const uint8_t* b, size_t n) {
  ImageInfo info{Format::webp};
  const uint64_t riff = le32(b + 4);
  if (riff + 8 > n) throw FormatError(cat("truncated WebP: RIFF size says ", riff + 8, " bytes, file has ", n));
  if (n < 30) throw FormatError("truncated WebP: no room for a frame header");
  const uint8_t* c = b + 12;
  const uint32_t clen = le32(c + 4);
  if (uint64_t(clen) + 20 > n) throw FormatError("truncated WebP: first chunk runs past the end");
  const uint8_t* d = c + 8;
  if (std::memcmp(c, "VP8 ", 4) == 0) {
    if (clen < 10 || d[3] != 0x9D || d[4] != 0x01 || d[5] != 0x2A) throw FormatError("corrupt WebP: bad VP8 frame header");
    info.width = (uint32_t(d[6]) | (uint32_t(d[7]) << 8)) & 0x3FFF;
    info.height = (uint32_t(d[8]) | (uint32_t(d[9]) << 8)) & 0x3FFF;
  } else if (std::memcmp(c, "VP8L", 4) == 0) {
    if (clen < 5 || d[0] != 0x2F) throw FormatError("corrupt WebP: bad VP8L header");
    const uint32_t bits = le32(d + 1);
    info.width = (bits & 0x3FFF) + 1;
    info.height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (std::memcmp(c, "VP8X", 4) == 0) {
    if (clen < 10) throw FormatError("corrupt WebP: short VP8X header");
    if (d[0] & 0x02) throw FormatError("unsupported WebP: animated images are not supported");
    info.width = int64_t(le24(d + 4)) + 1;
    info.height = int64_t(le24(d + 7)) + 1;
  } else {
    throw FormatError("corrupt WebP: first chunk is not VP8, VP8L or VP8X");
  }
  if (info.width == 0 || info.height == 0) throw FormatError(cat("corrupt WebP: size ", info.width, "x", info.height));
  return info;
}

}  // namespace

const char* format_name(Format f) {
  switch (f) {
    case Format::png: return "PNG";
    case Format::jpeg: return "JPEG";
    case Format::webp: return "WebP";
  }
  return "?";
}

ImageInfo probe(const uint8_t* b, size_t n) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b == nullptr || n == 0) throw FormatError("empty image: 0 bytes");
  if (n >= 8 && std::memcmp(b, kPng, 8) == 0) return probe_png(b, n);
  if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return probe_jpeg(b, n);
  if (n >= 16 && std::memcmp(b, "RIFF", 4) == 0 && std::memcmp(b + 8, "WEBP", 4) == 0) return probe_webp(b, n);
  if (n < 16) throw FormatError(cat("not an image: only ", n, " bytes"));
  throw FormatError("unsupported or corrupt image: not PNG, JPEG or WebP");
}

}  // namespace bluelm::image
