"""Image decoding and tiling against a PIL + numpy reference, and bad input."""
import base64
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from bluelm_v import FormatError, LimitError, dynres
from bluelm_v.image import decode_base64, load_image, load_image_base64, preprocess, probe, resize_bicubic
from bluelm_v.samples import SAMPLES, make_sample, sample_bytes

# Tolerance against the PIL reference: resizing is bit-exact (uint8), so the float tiles differ only by the
# float32 rounding of (x/255 - mean)/std: below 1e-6.
TILE_TOL = 1e-6


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def random_image(rng, w, h) -> np.ndarray:
    # Smooth content plus noise, so resampling errors would show.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def pil_resize(pil: Image.Image, size) -> Image.Image:
    """Pillow's two-pass bicubic resize: horizontal pass, then vertical pass, uint8 in between.

    Pillow <= 12 does exactly this inside one ``resize`` call (the Pillow the LLaVA-NeXT / InternVL / SigLIP
    pipelines ran). Pillow 13 sometimes runs the vertical pass first, which moves a few pixels by 1-3 levels;
    composing the two single-axis passes pins the classic result on any Pillow version."""
    if size[0] != pil.width:
        pil = pil.resize((size[0], pil.height), Image.BICUBIC)
    if size[1] != pil.height:
        pil = pil.resize((pil.width, size[1]), Image.BICUBIC)
    return pil


def reference_tiles(img: np.ndarray, plan: dynres.Plan, mean=0.5, std=0.5) -> np.ndarray:
    """LLaVA-NeXT / InternVL preprocessing written with PIL and numpy, as those code bases do it."""
    pil = Image.fromarray(img)
    W, H = plan.canvas
    canvas = Image.new("RGB", (W, H), (0, 0, 0))
    canvas.paste(pil_resize(pil, plan.content), plan.offset)
    tiles = [canvas.crop((x, y, x + 384, y + 384)) for y in range(0, H, 384) for x in range(0, W, 384)]
    if plan.patches > plan.local_patches:
        thumb = pil_resize(pil, (384, 384))
        tiles = [thumb] + tiles if plan.thumbnail_first else tiles + [thumb]
    arr = np.stack([np.asarray(t, dtype=np.float64) for t in tiles]) / 255.0
    return ((arr - mean) / std).transpose(0, 3, 1, 2)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 500), st.integers(1, 500))
def test_resize_is_bit_exact_with_pillow(w, h, dw, dh):
    img = random_image(np.random.default_rng(w * 1000 + h), w, h)
    ours = resize_bicubic(img, (dw, dh))
    ref = np.asarray(pil_resize(Image.fromarray(img), (dw, dh)))
    assert ours.shape == ref.shape
    assert np.array_equal(ours, ref)


def test_resize_large_factors_bit_exact():
    img = random_image(np.random.default_rng(1), 2000, 1500)
    for size in [(384, 384), (768, 576), (1536, 1152), (3001, 17), (5, 4000)]:
        assert np.array_equal(resize_bicubic(img, size, threads=2),
                              np.asarray(pil_resize(Image.fromarray(img), size))), size


def test_single_axis_resize_equals_one_pillow_call():
    # One pass only: identical to Pillow's own resize on every version.
    img = random_image(np.random.default_rng(2), 301, 157)
    for size in [(97, 157), (900, 157), (301, 40), (301, 1000)]:
        assert np.array_equal(resize_bicubic(img, size), np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC)))


@pytest.mark.parametrize("scheme", dynres.SCHEMES)
@pytest.mark.parametrize("size", [(500, 102), (394, 390), (1080, 2400), (37, 900), (1, 1), (3000, 10)])
def test_tiles_match_pil_reference(scheme, size):
    img = random_image(np.random.default_rng(size[0]), *size)
    pre = preprocess(img, scheme)
    assert pre.pixels.dtype == np.float32
    assert pre.pixels.shape == (pre.plan.patches, 3, 384, 384)
    ref = reference_tiles(img, pre.plan)
    assert np.abs(pre.pixels - ref).max() <= TILE_TOL


def test_tiles_with_other_normalization_and_threads():
    img = random_image(np.random.default_rng(3), 800, 600)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    a = preprocess(img, "llava_next", mean=mean, std=std, threads=2)
    ref = reference_tiles(img, a.plan, np.array(mean)[None, None, None], np.array(std)[None, None, None])
    assert np.abs(a.pixels - ref).max() <= 1e-5


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_decode_formats_like_pil(fmt):
    data = sample_bytes("receipt", fmt)
    ours = load_image(data)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert ours.shape == ref.shape
    if fmt == "PNG":
        assert np.array_equal(ours, ref)
    else:
        # Lossy formats: same decoder family (libjpeg-turbo / libwebp), pixel values within 1-2 levels.
        assert np.abs(ours.astype(int) - ref).mean() < 1.0


def test_decode_variants_gray_alpha_palette_and_exif():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 10
    assert np.array_equal(load_image(encode(rgba, "PNG")), rgba[..., :3])  # alpha dropped, as convert("RGB")
    gray = np.arange(600, dtype=np.uint8).reshape(20, 30)
    assert np.array_equal(load_image(encode(gray, "PNG")), np.repeat(gray[..., None], 3, 2))
    pal = Image.fromarray(random_image(np.random.default_rng(0), 30, 20)).convert("P")
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    assert np.array_equal(load_image(buf.getvalue()), np.asarray(pal.convert("RGB")))
    # EXIF orientation is ignored, as PIL's Image.open does.
    exif = Image.Exif()
    exif[0x0112] = 6
    arr = random_image(np.random.default_rng(1), 40, 16)
    data = encode(arr, "JPEG", exif=exif.tobytes(), quality=95)
    assert load_image(data).shape == (16, 40, 3)


def test_sources_path_base64_pil_array(tmp_path):
    data = sample_bytes("banner")
    path = tmp_path / "b.png"
    path.write_bytes(data)
    ref = load_image(data)
    assert np.array_equal(load_image(path), ref)
    assert np.array_equal(load_image(str(path)), ref)
    b64 = base64.b64encode(data).decode()
    assert np.array_equal(load_image_base64(b64), ref)
    assert np.array_equal(load_image("data:image/png;base64," + b64), ref)
    assert np.array_equal(load_image(Image.open(io.BytesIO(data))), ref)
    assert np.array_equal(load_image(ref), ref)
    assert probe(data) == ("PNG", *SAMPLES["banner"][:2])


def test_truncated_and_corrupt_bytes_are_refused():
    for fmt in ("PNG", "JPEG", "WEBP"):
        data = sample_bytes("banner", fmt)
        for cut in (0, 5, 40, len(data) // 3, len(data) - 2):
            with pytest.raises(FormatError):
                load_image(data[:cut])
    with pytest.raises(FormatError, match="not PNG, JPEG or WebP"):
        load_image(b"GIF89a" + b"\0" * 40)
    with pytest.raises(FormatError):
        load_image(b"")
    # A JPEG whose entropy data was overwritten with junk after the header must not crash.
    data = bytearray(sample_bytes("photo", "JPEG"))
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff\x12" * 32
    with pytest.raises(FormatError):
        load_image(bytes(data))


def png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header is rewritten to claim a huge size (a decompression bomb's shape)."""
    data = bytearray(encode(np.zeros((4, 4, 3), np.uint8), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_pixel_limit_refuses_before_decoding():
    with pytest.raises(LimitError, match="max_pixels"):
        load_image(png_claiming(100_000, 100_000))
    with pytest.raises(LimitError):
        load_image(sample_bytes("banner"), max_pixels=1000)
    with pytest.raises(LimitError):
        load_image(sample_bytes("banner"), max_bytes=100)
    with pytest.raises(LimitError):
        preprocess(np.zeros((100, 100, 3), np.uint8), max_pixels=50)


@pytest.mark.parametrize("bad", ["@@@@", "QUJD$", "QUJDRA=x", "Q", "QU=JD", "data:image/png,QUJD"])
def test_bad_base64_is_refused(bad):
    with pytest.raises(FormatError, match="base64"):
        decode_base64(bad)


def test_base64_accepts_whitespace_and_missing_padding():
    assert decode_base64("QUJD\nRA") == b"ABCD"
    assert decode_base64(b"QUJDRA==") == b"ABCD"


@pytest.mark.parametrize(
    "arr, error",
    [
        (np.zeros((0, 10, 3), np.uint8), ValueError),
        (np.zeros((10, 0, 3), np.uint8), ValueError),
        (np.zeros((10, 10, 2), np.uint8), ValueError),
        (np.zeros((10, 10, 3), np.float32), ValueError),
    ],
)
def test_bad_arrays(arr, error):
    with pytest.raises(error):
        preprocess(arr)


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.png")
    with pytest.raises(TypeError):
        load_image(12345)


def test_samples_are_deterministic():
    for name in SAMPLES:
        a, b = make_sample(name), make_sample(name)
        assert a.shape == (SAMPLES[name][1], SAMPLES[name][0], 3)
        assert np.array_equal(a, b)


@pytest.mark.parametrize("transparent", [False, True])
def test_16bit_grayscale_png_decodes_like_pillow(transparent):
    """Issue 19: Pillow opens a 16-bit grayscale PNG as I;16 and clips to 255 on conversion to RGB; OpenCV's colour
    read rescaled (v >> 8), 127/255 off for v = 32768. Every value from 0 to 65535 in steps, and with tRNS."""
    values = np.concatenate([np.arange(0, 1024), np.arange(1024, 65536, 97), [65535, 32768]]).astype(np.uint16)
    values = np.concatenate([values, np.full(-len(values) % 32, 32768, np.uint16)])
    a = values.reshape(-1, 32)
    buf = io.BytesIO()
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    im.save(buf, "PNG", **({"transparency": 300} if transparent else {}))
    data = buf.getvalue()
    assert data[24:26] == bytes([16, 0])  # bit depth 16, colour type 0
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    got = load_image(data)
    assert got.shape == want.shape and np.array_equal(got, want)
    assert got[a == 32768].max() == 255  # the value the report found off by 127


def png_chunks(width: int, height: int, depth: int, colour: int, raw: bytes, interlace: int = 0) -> bytes:
    """A PNG written by hand (Pillow writes no 16-bit RGB/RGBA or interlaced files): IHDR, one IDAT, IEND."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def adam7(img: np.ndarray) -> bytes:
    """Scanlines of an Adam7-interlaced PNG (filter 0), pass by pass."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    return b"".join(b"\0" + row.tobytes() for x0, y0, dx, dy in passes for row in img[y0::dy, x0::dx] if row.size)


def png_layouts() -> dict:
    rgb = Image.fromarray(random_image(np.random.default_rng(4), 67, 45))
    gray = rgb.convert("L")
    rgba = Image.fromarray(np.dstack([np.asarray(rgb), np.asarray(gray)]), "RGBA")
    rng = np.random.default_rng(5)
    rgb16 = rng.integers(0, 65536, (13, 11, 3)).astype(">u2")
    rgba16 = rng.integers(0, 65536, (13, 11, 4)).astype(">u2")
    la16 = rng.integers(0, 65536, (13, 11, 2)).astype(">u2")
    gray16 = rng.integers(0, 65536, (13, 11)).astype(">u2")
    return {
        "1-bit": encode(np.asarray(gray.convert("1")), "PNG"),
        "gray 2-bit": encode(np.asarray(gray) // 64 * 64, "PNG", bits=2),
        "gray 4-bit": encode(np.asarray(gray) // 16 * 16, "PNG", bits=4),
        "gray tRNS": encode(np.asarray(gray), "PNG", transparency=7),
        "gray+alpha": encode(np.asarray(rgba.convert("LA")), "PNG"),
        "RGB tRNS": encode(np.asarray(rgb), "PNG", transparency=(10, 20, 30)),
        "palette 2-bit": encode_pil(rgb.convert("P", palette=Image.ADAPTIVE, colors=4), "PNG", bits=2),
        "palette tRNS": encode_pil(rgb.convert("P"), "PNG", transparency=3),
        "RGB 16-bit": png_chunks(11, 13, 16, 2, b"".join(b"\0" + r.tobytes() for r in rgb16)),
        "RGBA 16-bit": png_chunks(11, 13, 16, 6, b"".join(b"\0" + r.tobytes() for r in rgba16)),
        "gray+alpha 16-bit": png_chunks(11, 13, 16, 4, b"".join(b"\0" + r.tobytes() for r in la16)),
        "RGB interlaced": png_chunks(67, 45, 8, 2, adam7(np.asarray(rgb)), interlace=1),
        "gray 16-bit interlaced": png_chunks(11, 13, 16, 0, adam7(gray16), interlace=1),
    }


def encode_pil(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("layout", list(png_layouts()))
def test_png_layouts_decode_like_pillow(layout):
    """Bit depths 1-16, palettes, gray, alpha, tRNS and interlacing: the same pixels as Pillow's convert("RGB")."""
    data = png_layouts()[layout]
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(load_image(data), want)


def test_cmyk_jpeg_decodes_like_pillow():
    """Pillow reads CMYK JPEGs Adobe-inverted and converts with its own rounding; ours gives the same pixels."""
    cmyk = Image.fromarray(random_image(np.random.default_rng(6), 67, 45)).convert("CMYK")
    data = encode_pil(cmyk, "JPEG", quality=90)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(load_image(data), want)


def test_jpeg_with_hundreds_of_scans_is_refused_quickly():
    """A small progressive JPEG repeating one scan 600 times (each scan a pass over the whole image) is refused."""
    data = encode(random_image(np.random.default_rng(7), 64, 64), "JPEG", progressive=True)
    last_scan = data.rindex(b"\xff\xda")
    many = data[:-2] + data[last_scan:-2] * 600 + data[-2:]
    with pytest.raises(FormatError, match="more than 500 progressive scans"):
        load_image(many)
