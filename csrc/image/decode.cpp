// Decoding with the reference codec libraries themselves (libpng, libjpeg-turbo, libwebp): the ones Pillow links,
// called so the pixels equal Pillow's Image.open(...).convert("RGB"). EXIF orientation is ignored, as Image.open
// does. The probe has already walked the container (whole file, size within the limits); each decoder's own header
// is checked against it before any pixel buffer is allocated.
//
// libpng and libjpeg report errors by longjmp. Each setjmp sits in a small function whose frame holds no C++ object
// with a destructor, and the message is copied into a plain buffer; the C++ caller turns it into a FormatError.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "common/error.h"
#include "image/image.h"

namespace bluelm::image {

namespace {

void check_size(const ImageInfo& info, int64_t w, int64_t h, const char* what) {
  if (w != info.width || h != info.height)
    throw FormatError(cat("corrupt ", format_name(info.format), " image: header says ", info.width, "x", info.height,
                          ", ", what, " says ", w, "x", h));
}

// ---------------------------------------------------------------------------------------------------------- PNG

struct PngCtx {
  const uint8_t* bytes;
  size_t n, pos;
  char message[200];
};

void png_fail(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngCtx*>(png_get_error_ptr(png));
  std::snprintf(ctx->message, sizeof ctx->message, "%s", msg);
  png_longjmp(png, 1);
}

void png_quiet(png_structp, png_const_charp) {}  // warnings (bad ancillary chunks) do not stop a decode

void png_read_mem(png_structp png, png_bytep out, png_size_t len) {
  auto* ctx = static_cast<PngCtx*>(png_get_io_ptr(png));
  if (len > ctx->n - ctx->pos) png_error(png, "read past the end of the file");
  std::memcpy(out, ctx->bytes + ctx->pos, len);
  ctx->pos += len;
}

struct PngLayout {
  png_uint_32 width, height;
  int bit_depth, channels;
  size_t rowbytes;
};

// The transforms that give Pillow's RGB: palette and 1/2/4-bit gray expanded (bit replication, as Pillow's
// unpackers), 16-bit channels cut to their high byte (Pillow's ;16B raw modes), gray copied to R, G and B, alpha
// and tRNS dropped. A 16-bit gray image is read as it is (Pillow's I;16, clipped by the caller).
bool png_read_header(png_structp png, png_infop info, bool gray16, PngLayout* out) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  if (!gray16) {
    png_set_palette_to_rgb(png);
    png_set_expand_gray_1_2_4_to_8(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  out->width = png_get_image_width(png, info);
  out->height = png_get_image_height(png, info);
  out->bit_depth = png_get_bit_depth(png, info);
  out->channels = png_get_channels(png, info);
  out->rowbytes = png_get_rowbytes(png, info);
  return true;
}

bool png_read_pixels(png_structp png, png_infop info, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, info);
  return true;
}

Image decode_png(const uint8_t* bytes, size_t n, const ImageInfo& info) {
  // IHDR is the first chunk (the probe checked): bit depth at byte 24, colour type at 25.
  const bool gray16 = bytes[24] == 16 && bytes[25] == 0;
  PngCtx ctx{bytes, n, 0, "unknown libpng error"};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_fail, png_quiet);
  png_infop pinfo = png ? png_create_info_struct(png) : nullptr;
  if (!pinfo) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw std::bad_alloc();
  }
  struct Guard {
    png_structp* p;
    png_infop* i;
    ~Guard() { png_destroy_read_struct(p, i, nullptr); }
  } guard{&png, &pinfo};
  png_set_read_fn(png, &ctx, png_read_mem);
  png_set_user_limits(png, png_uint_32(info.width), png_uint_32(info.height));
  PngLayout lay{};
  if (!png_read_header(png, pinfo, gray16, &lay)) throw FormatError(cat("corrupt PNG image: ", ctx.message));
  check_size(info, lay.width, lay.height, "libpng");
  const int want_depth = gray16 ? 16 : 8, want_channels = gray16 ? 1 : 3;
  const size_t want_rowbytes = size_t(lay.width) * size_t(want_channels) * size_t(want_depth / 8);
  if (lay.bit_depth != want_depth || lay.channels != want_channels || lay.rowbytes != want_rowbytes)
    throw FormatError(cat("unsupported PNG pixel layout: ", lay.channels, " channels of ", lay.bit_depth, " bits"));
  std::vector<uint8_t> pixels(want_rowbytes * lay.height);
  std::vector<png_bytep> rows(lay.height);
  for (size_t y = 0; y < lay.height; ++y) rows[y] = pixels.data() + y * want_rowbytes;
  if (!png_read_pixels(png, pinfo, rows.data())) throw FormatError(cat("corrupt PNG image: ", ctx.message));
  Image out;
  out.width = lay.width;
  out.height = lay.height;
  if (!gray16) {
    out.data = std::move(pixels);
    return out;
  }
  // Pillow opens 16-bit gray as I;16 and clips each value to 255 on convert("RGB") (no rescaling).
  out.data.resize(size_t(out.width) * size_t(out.height) * 3);
  uint8_t* o = out.data.data();
  for (size_t i = 0; i < size_t(out.width) * size_t(out.height); ++i, o += 3) {
    const unsigned v = (unsigned(pixels[2 * i]) << 8) | pixels[2 * i + 1];  // PNG samples are big-endian
    o[0] = o[1] = o[2] = uint8_t(v > 255 ? 255 : v);
  }
  return out;
}

// --------------------------------------------------------------------------------------------------------- JPEG

// A progressive file may hold any number of scans, each a pass over the whole image: a few hundred tiny scans make a
// small file that decodes for minutes. libjpeg-turbo's own tools cap them (-maxscans); so do we.
constexpr int kMaxJpegScans = 500;

struct JpegCtx {
  jpeg_error_mgr err;  // first member: libjpeg hands back &err, the cast below recovers the context
  jpeg_progress_mgr progress;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* ctx = reinterpret_cast<JpegCtx*>(cinfo->err);
  cinfo->err->format_message(cinfo, ctx->message);
  std::longjmp(ctx->jump, 1);
}

void jpeg_quiet(j_common_ptr, int) {}  // warnings (corrupt data that libjpeg recovers from) decode on, as in Pillow

void jpeg_count_scans(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->is_decompressor && d->input_scan_number > kMaxJpegScans) {
    auto* ctx = reinterpret_cast<JpegCtx*>(cinfo->err);
    std::snprintf(ctx->message, sizeof ctx->message, "more than %d progressive scans", kMaxJpegScans);
    std::longjmp(ctx->jump, 1);
  }
}

bool jpeg_create(jpeg_decompress_struct* cinfo, JpegCtx* ctx) {
  if (setjmp(ctx->jump)) return false;  // only an allocation can fail here
  jpeg_create_decompress(cinfo);
  return true;
}

bool jpeg_header(jpeg_decompress_struct* cinfo, JpegCtx* ctx, const uint8_t* bytes, size_t n) {
  if (setjmp(ctx->jump)) return false;
  jpeg_mem_src(cinfo, bytes, static_cast<unsigned long>(n));
  jpeg_read_header(cinfo, TRUE);
  // Pillow's JPEG decoder asks for RGB (grayscale expanded by libjpeg) or CMYK, with libjpeg's defaults otherwise.
  const bool cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
  cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  return true;
}

bool jpeg_pixels(jpeg_decompress_struct* cinfo, JpegCtx* ctx, uint8_t* out, uint8_t* cmyk_row) {
  if (setjmp(ctx->jump)) return false;
  jpeg_start_decompress(cinfo);
  const size_t w = cinfo->output_width;
  if (cinfo->output_components != (cmyk_row ? 4 : 3) || cinfo->output_width != cinfo->image_width ||
      cinfo->output_height != cinfo->image_height) {
    std::snprintf(ctx->message, sizeof ctx->message, "unsupported pixel layout: %d components of %ux%u",
                  cinfo->output_components, cinfo->output_width, cinfo->output_height);
    return false;
  }
  while (cinfo->output_scanline < cinfo->output_height) {
    uint8_t* row = out + size_t(cinfo->output_scanline) * w * 3;
    JSAMPROW dst = cmyk_row ? cmyk_row : row;
    if (jpeg_read_scanlines(cinfo, &dst, 1) != 1) {
      std::snprintf(ctx->message, sizeof ctx->message, "the decoder stopped at row %u", cinfo->output_scanline);
      return false;
    }
    if (cmyk_row) {
      // Pillow reads CMYK JPEGs as Adobe-inverted ("CMYK;I") and converts with R = (255-K) - C*(255-K)/255 rounded;
      // with the inverted samples c' = 255-C, k' = 255-K that is k' - (255-c')*k'/255.
      for (size_t x = 0; x < w; ++x) {
        const int nk = cmyk_row[4 * x + 3];
        for (int ch = 0; ch < 3; ++ch) {
          const int t = (255 - cmyk_row[4 * x + ch]) * nk + 128;
          const int v = nk - (((t >> 8) + t) >> 8);
          row[3 * x + ch] = uint8_t(v < 0 ? 0 : v);
        }
      }
    }
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

Image decode_jpeg(const uint8_t* bytes, size_t n, const ImageInfo& info) {
  jpeg_decompress_struct cinfo;
  JpegCtx ctx;
  cinfo.err = jpeg_std_error(&ctx.err);
  ctx.err.error_exit = jpeg_fail;
  ctx.err.emit_message = jpeg_quiet;
  std::snprintf(ctx.message, sizeof ctx.message, "unknown libjpeg error");
  if (!jpeg_create(&cinfo, &ctx)) throw std::bad_alloc();
  struct Guard {
    jpeg_decompress_struct* c;
    ~Guard() { jpeg_destroy_decompress(c); }
  } guard{&cinfo};
  ctx.progress.progress_monitor = jpeg_count_scans;
  cinfo.progress = &ctx.progress;
  if (!jpeg_header(&cinfo, &ctx, bytes, n)) throw FormatError(cat("corrupt JPEG image: ", ctx.message));
  check_size(info, cinfo.image_width, cinfo.image_height, "libjpeg");
  Image out;
  out.width = cinfo.image_width;
  out.height = cinfo.image_height;
  out.data.resize(size_t(out.width) * size_t(out.height) * 3);
  std::vector<uint8_t> cmyk_row(cinfo.out_color_space == JCS_CMYK ? size_t(out.width) * 4 : 0);
  if (!jpeg_pixels(&cinfo, &ctx, out.data.data(), cmyk_row.empty() ? nullptr : cmyk_row.data()))
    throw FormatError(cat("corrupt JPEG image: ", ctx.message));
  return out;
}

// --------------------------------------------------------------------------------------------------------- WebP

const char* webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data";
    default: return "unknown libwebp error";
  }
}

Image decode_webp(const uint8_t* bytes, size_t n, const ImageInfo& info) {
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) throw std::runtime_error("libwebp: decoder version mismatch");
  const VP8StatusCode head = WebPGetFeatures(bytes, n, &config.input);
  if (head != VP8_STATUS_OK) throw FormatError(cat("corrupt WebP image: ", webp_status(head)));
  check_size(info, config.input.width, config.input.height, "libwebp");
  if (config.input.has_animation) throw FormatError("unsupported WebP: animated images are not supported");
  Image out;
  out.width = config.input.width;
  out.height = config.input.height;
  out.data.resize(size_t(out.width) * size_t(out.height) * 3);
  // Alpha is dropped (the colour samples as stored), as Pillow's convert("RGB").
  config.output.colorspace = MODE_RGB;
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = out.data.data();
  config.output.u.RGBA.stride = int(out.width * 3);
  config.output.u.RGBA.size = out.data.size();
  const VP8StatusCode st = WebPDecode(bytes, n, &config);
  WebPFreeDecBuffer(&config.output);  // external memory: frees nothing of ours, kept for the API's contract
  if (st != VP8_STATUS_OK) throw FormatError(cat("corrupt WebP image: ", webp_status(st)));
  return out;
}

}  // namespace

Image decode(const uint8_t* bytes, size_t n, const Limits& limits) {
  if (int64_t(n) > limits.max_bytes)
    throw LimitError(cat("image of ", n, " bytes exceeds max_bytes=", limits.max_bytes));
  const ImageInfo info = probe(bytes, n);
  if (info.width * info.height > limits.max_pixels)
    throw LimitError(cat(format_name(info.format), " image of ", info.width, "x", info.height, " (",
                         info.width * info.height, " pixels) exceeds max_pixels=", limits.max_pixels));
  switch (info.format) {
    case Format::png: return decode_png(bytes, n, info);
    case Format::jpeg: return decode_jpeg(bytes, n, info);
    case Format::webp: return decode_webp(bytes, n, info);
  }
  throw FormatError("unsupported image format");
}

}  // namespace bluelm::image
