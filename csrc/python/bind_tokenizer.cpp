#include <algorithm>

#include "common/error.h"
#include "python/bindings.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace bluelm::python {

namespace {
using namespace bluelm::tokenizer;

// str (UTF-8) or bytes (taken as they are, possibly invalid UTF-8) -> std::string. A str holding a lone surrogate
// ('\ud800', which json.loads gives for "\\ud800") is not Unicode text and has no UTF-8 form: it is refused with a
// UnicodeEncodeError (a ValueError) naming the argument and the position, as HF tokenizers refuse it too. Callers
// who mean raw bytes pass text.encode("utf-8", "surrogatepass"); text.encode("utf-8", "replace") drops them.
std::string text_arg(const py::handle& obj, const char* name) {
  if (py::isinstance<py::bytes>(obj)) return obj.cast<std::string>();
  if (!py::isinstance<py::str>(obj)) throw py::type_error(std::string(name) + " must be str or bytes");
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(obj.ptr(), &n);
  if (p) return std::string(p, size_t(n));
  PyErr_Clear();
  const Py_ssize_t len = PyUnicode_GetLength(obj.ptr());
  Py_ssize_t at = 0;
  while (at < len) {
    const Py_UCS4 c = PyUnicode_ReadChar(obj.ptr(), at);
    if (c >= 0xD800 && c <= 0xDFFF) break;
    ++at;
  }
  const std::string reason = std::string(name) +
                             " holds a lone surrogate, which is not Unicode text; pass bytes to tokenize raw bytes "
                             "(text.encode('utf-8', 'surrogatepass')) or text.encode('utf-8', 'replace')";
  PyObject* err = PyObject_CallFunction(PyExc_UnicodeEncodeError, "sOnns", "utf-8", obj.ptr(), at,
                                        std::min(at + 1, len), reason.c_str());
  if (err) {
    PyErr_SetObject(PyExc_UnicodeEncodeError, err);
    Py_DECREF(err);
  }
  throw py::error_already_set();
}

std::vector<int32_t> ids_arg(const py::iterable& ids) {
  std::vector<int32_t> out;
  for (const py::handle& h : ids) {
    try {
      out.push_back(h.cast<int32_t>());
    } catch (const py::cast_error&) {
      throw py::type_error("token ids must be integers in the int32 range, got " +
                           std::string(py::repr(h)));
    }
  }
  return out;
}

py::str utf8_str(const std::string& s) { return py::str(s.data(), s.size()); }

Tokenizer make(const std::string& model, const std::string& pre, std::vector<std::string> tokens,
               const std::vector<int>& types, std::vector<std::pair<std::string, std::string>> merges, int32_t bos,
               int32_t eos, int32_t pad, int32_t unk, bool add_bos, bool add_eos) {
  Spec s;
  s.model = parse_model(model);
  s.pre = parse_pre_tokenizer(pre);
  s.tokens = std::move(tokens);
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i] < 1 || types[i] > 6) throw FormatError(cat("token ", i, " has unknown type ", types[i]));
    s.types.push_back(TokenType(types[i]));
  }
  s.merges = std::move(merges);
  s.bos_id = bos, s.eos_id = eos, s.pad_id = pad, s.unk_id = unk;
  s.add_bos = add_bos, s.add_eos = add_eos;
  py::gil_scoped_release release;
  return Tokenizer(std::move(s));
}
}  // namespace

void bind_tokenizer(py::module_& m) {
  py::class_<Tokenizer>(m, "Tokenizer")
      .def(py::init(&make), py::arg("model"), py::arg("pre"), py::arg("tokens"), py::arg("types"),
           py::arg("merges"), py::arg("bos_id") = -1, py::arg("eos_id") = -1, py::arg("pad_id") = -1,
           py::arg("unk_id") = -1, py::arg("add_bos") = false, py::arg("add_eos") = false)
      .def_static("bytes", &Tokenizer::bytes, py::arg("vocab_size") = kByteMinVocab)
      .def_static("from_bytes",
                  [](const py::bytes& b) {
                    const std::string_view v = b;
                    py::gil_scoped_release release;
                    return Tokenizer::from_bytes(reinterpret_cast<const uint8_t*>(v.data()), v.size());
                  })
      .def_static("load", &Tokenizer::load, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def("to_bytes",
           [](const Tokenizer& t) {
             const std::vector<uint8_t> b = t.to_bytes();
             return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
           })
      .def("save", &Tokenizer::save, py::arg("path"))
      .def(
          "encode",
          [](const Tokenizer& t, const py::handle& text, bool add_special, bool parse_special) {
            const std::string s = text_arg(text, "text");
            std::vector<int32_t> ids;
            {
              py::gil_scoped_release release;
              ids = t.encode(s, {add_special, parse_special});
            }
            return ids;
          },
          py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = true)
      .def(
          "decode",
          [](const Tokenizer& t, const py::iterable& ids, bool skip_special) {
            return utf8_str(t.decode_text(ids_arg(ids), skip_special));
          },
          py::arg("ids"), py::arg("skip_special") = false)
      .def(
          "decode_bytes",
          [](const Tokenizer& t, const py::iterable& ids, bool skip_special) {
            return py::bytes(t.decode(ids_arg(ids), skip_special));
          },
          py::arg("ids"), py::arg("skip_special") = false)
      .def("token_to_piece", [](const Tokenizer& t, int32_t id) { return py::bytes(t.token_to_piece(id)); })
      .def("token_text", [](const Tokenizer& t, int32_t id) { return utf8_str(t.token_text(id)); })
      .def("token_type", [](const Tokenizer& t, int32_t id) { return int(t.token_type(id)); })
      .def("token_to_id", [](const Tokenizer& t, const std::string& s) { return t.token_to_id(s); })
      .def("__len__", &Tokenizer::n_vocab)
      .def_property_readonly("n_vocab", &Tokenizer::n_vocab)
      .def_property_readonly("bos_id", &Tokenizer::bos_id)
      .def_property_readonly("eos_id", &Tokenizer::eos_id)
      .def_property_readonly("pad_id", &Tokenizer::pad_id)
      .def_property_readonly("unk_id", &Tokenizer::unk_id)
      .def_property_readonly("add_bos", [](const Tokenizer& t) { return t.spec().add_bos; })
      .def_property_readonly("add_eos", [](const Tokenizer& t) { return t.spec().add_eos; })
      .def_property_readonly("model", [](const Tokenizer& t) { return std::string(model_name(t.spec().model)); })
      .def_property_readonly("pre_tokenizer",
                             [](const Tokenizer& t) { return std::string(pre_tokenizer_name(t.spec().pre)); });

  py::class_<StreamDecoder>(m, "StreamDecoder")
      .def(py::init<Tokenizer, bool>(), py::arg("tokenizer"), py::arg("skip_special") = false)
      .def("push", [](StreamDecoder& d, int32_t id) { return utf8_str(d.push(id)); }, py::arg("id"))
      .def("flush", [](StreamDecoder& d) { return utf8_str(d.flush()); })
      .def_property_readonly("pending_bytes", &StreamDecoder::pending_bytes);

  py::class_<ChatFormat>(m, "ChatFormat")
      .def(py::init<>())
      .def_readwrite("prologue", &ChatFormat::prologue)
      .def_readwrite("turn_prefix", &ChatFormat::turn_prefix)
      .def_readwrite("turn_suffix", &ChatFormat::turn_suffix)
      .def_readwrite("has_default_system", &ChatFormat::has_default_system)
      .def_readwrite("default_system", &ChatFormat::default_system)
      .def_readwrite("generation_prompt", &ChatFormat::generation_prompt);

  m.def(
      "format_chat",
      [](const ChatFormat& f, const std::vector<std::pair<std::string, std::string>>& messages, bool add_gen) {
        std::vector<ChatMessage> msgs;
        for (const auto& [role, content] : messages) msgs.push_back({role, content});
        return utf8_str(format_chat(f, msgs, add_gen));
      },
      py::arg("format"), py::arg("messages"), py::arg("add_generation_prompt"));

  m.def(
      "pretokenize",
      [](const py::handle& text, const std::string& pre) {
        const std::string s = text_arg(text, "text");
        std::vector<Piece> pieces;
        pretokenize(s, parse_pre_tokenizer(pre), pieces);
        py::list out;
        for (const Piece& p : pieces) out.append(py::bytes(s.data() + p.begin, p.end - p.begin));
        return out;
      },
      py::arg("text"), py::arg("pre"));
  m.def("unicode_char_class", [](uint32_t cp) { return int(char_class(cp)); }, py::arg("codepoint"));
  m.def("unicode_char_classes", [](uint32_t n) {  // [n] classes of code points 0..n-1, for the table test
    if (n > 0x110000) throw InvalidArgument("at most 0x110000 code points");
    py::array_t<uint8_t> out(n);
    uint8_t* p = out.mutable_data();
    for (uint32_t c = 0; c < n; ++c) p[c] = uint8_t(char_class(c));
    return out;
  });
  m.attr("unicode_version") = unicode_version();
}

}  // namespace bluelm::python
