/// @file io/json.hpp
/// JSON through nlohmann/json: a strict parser on its SAX interface, a writer that refuses what
/// JSON cannot hold, and checked accessors that throw FormatError naming the document.
///
/// Numbers: integers in [-2^63, 2^64) stay exact 64-bit integers (json_u64() takes only those
/// that are >= 0); a fraction, an exponent or an integer beyond 64 bits is a double. Parsing and
/// writing do not depend on the C locale.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "error.hpp"

namespace loftq::io {

/// A JSON value whose objects are sorted by key (a std::map): lookup and insertion take
/// O(log n), for safetensors headers and indexes of any size.
using Json = nlohmann::json;

/// A JSON value whose objects keep their insertion order (lookup is linear): for small objects
/// whose key order is part of a format, such as bitsandbytes' quant state.
using OrderedJson = nlohmann::ordered_json;

/// Deepest nesting of arrays and objects parse_json() accepts.
inline constexpr std::size_t json_max_depth = 64;

/// Most values (arrays, objects and scalars; not keys) in a document parse_json() accepts: a
/// safetensors header of 100,000 tensors has about 10^6. Bounds the memory a hostile document
/// can take.
inline constexpr std::size_t json_max_values = std::size_t{1} << 22;

namespace detail {

/// A SAX handler for Json::sax_parse that builds the document, as nlohmann's own DOM parser
/// does, and also rejects duplicate keys, nesting deeper than json_max_depth and more than
/// json_max_values values. On a fault it stops the parse and keeps the reason.
class StrictJsonBuilder {
 public:
  /// Builds into `root`.
  explicit StrictJsonBuilder(Json& root) : root_(root) {}

  /// A null.
  bool null() { return add(nullptr); }
  /// A boolean.
  bool boolean(bool value) { return add(value); }
  /// A negative integer.
  bool number_integer(Json::number_integer_t value) { return add(value); }
  /// A non-negative integer below 2^64.
  bool number_unsigned(Json::number_unsigned_t value) { return add(value); }
  /// Any other number.
  bool number_float(Json::number_float_t value, const Json::string_t& /*text*/) { return add(value); }
  /// A string (UTF-8, checked by the lexer).
  bool string(Json::string_t& value) { return add(std::move(value)); }
  /// A binary value: never produced from JSON text.
  bool binary(Json::binary_t& /*value*/) { return stop("binary value"); }
  /// The start of an object.
  bool start_object(std::size_t /*size*/) { return open(Json::object()); }
  /// A key of the innermost object: the slot its value goes to; a duplicate stops the parse.
  bool key(Json::string_t& key) {
    auto [member, inserted] = stack_.back()->emplace(std::move(key), nullptr);
    if (!inserted) return stop("duplicate key \"" + member.key() + "\"");
    slot_ = &member.value();
    return true;
  }
  /// The end of an object.
  bool end_object() {
    stack_.pop_back();
    return true;
  }
  /// The start of an array.
  bool start_array(std::size_t /*size*/) { return open(Json::array()); }
  /// The end of an array.
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  /// A syntax error found by nlohmann's lexer or parser: stops the parse.
  bool parse_error(std::size_t position, const std::string& /*last_token*/, const Json::exception& error) {
    std::string why = error.what();
    const std::size_t tag = why.find("] ");  // drop nlohmann's "[json.exception.parse_error.101] "
    if (why.rfind("[json.exception.", 0) == 0 && tag != std::string::npos) why.erase(0, tag + 2);
    return stop("at byte " + std::to_string(position) + ": " + why);
  }

  /// Why the parse stopped.
  const std::string& reason() const { return reason_; }

 private:
  bool stop(std::string reason) {
    reason_ = std::move(reason);
    return false;
  }

  // Puts a value where the document's next value goes; returns it.
  Json* place(Json&& value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    Json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    *slot_ = std::move(value);
    return slot_;
  }

  bool count() {
    if (++values_ <= json_max_values) return true;
    return stop("more than " + std::to_string(json_max_values) + " values");
  }

  bool add(Json&& value) {
    if (!count()) return false;
    place(std::move(value));
    return true;
  }

  bool open(Json&& container) {
    if (!count()) return false;
    if (stack_.size() >= json_max_depth) return stop("nesting deeper than " + std::to_string(json_max_depth));
    stack_.push_back(place(std::move(container)));
    return true;
  }

  Json& root_;
  std::vector<Json*> stack_;  // the open arrays and objects, innermost last
  Json* slot_ = nullptr;      // the value of the innermost object's last key
  std::size_t values_ = 0;
  std::string reason_;
};

/// The first number in `value` that is NaN or infinite, or nullptr; its JSON pointer in `path`.
template <class BasicJson>
const BasicJson* find_non_finite(const BasicJson& value, std::string& path) {
  if (value.is_number_float()) {
    return std::isfinite(value.template get<double>()) ? nullptr : &value;
  }
  if (!value.is_structured()) return nullptr;
  const std::size_t length = path.size();
  std::size_t index = 0;
  for (auto it = value.begin(); it != value.end(); ++it, ++index) {
    path += '/';
    path += value.is_object() ? it.key() : std::to_string(index);
    if (const BasicJson* bad = find_non_finite(*it, path)) return bad;
    path.resize(length);
  }
  return nullptr;
}

/// dump_json() for either kind of value.
template <class BasicJson>
std::string dump_checked(const BasicJson& value, int indent) {
  std::string path;
  if (const BasicJson* bad = find_non_finite(value, path)) {
    throw ArgumentError("JSON number at \"" + path + "\" is " + std::to_string(bad->template get<double>()) +
                        ", which JSON cannot hold");
  }
  try {
    return value.dump(indent);
  } catch (const typename BasicJson::type_error& e) {  // a string that is not UTF-8
    throw ArgumentError(std::string("JSON string cannot be written: ") + e.what());
  }
}

/// At most 40 characters of `value`'s JSON text, for error messages.
inline std::string json_excerpt(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 40) text.replace(37, std::string::npos, "...");
  return text;
}

}  // namespace detail

/// Parses the JSON document `text`; `what` (e.g. a file name) starts every error message.
/// Throws FormatError for text that is not exactly one JSON value (RFC 8259; no comments, no
/// byte order mark, no NUL byte, nothing after the value), invalid UTF-8 or an unpaired
/// surrogate escape, a
/// number beyond the range of a double, a duplicate key, nesting deeper than json_max_depth, or
/// more than json_max_values values.
inline Json parse_json(std::string_view text, const std::string& what = "JSON") {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") throw FormatError(what + ": invalid JSON: it starts with a byte order mark");
  // nlohmann's lexer takes a NUL byte for the end of the input; JSON has none outside escapes.
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    throw FormatError(what + ": invalid JSON: at byte " + std::to_string(nul) + ": a NUL byte");
  }
  Json root;
  detail::StrictJsonBuilder builder(root);
  if (!Json::sax_parse(text.data(), text.data() + text.size(), &builder)) {
    throw FormatError(what + ": invalid JSON: " + builder.reason());
  }
  return root;
}

/// The JSON text of `value`: compact (no spaces) when indent < 0, else one member or element
/// per line, indented by `indent` spaces per level. Throws ArgumentError for a number that is
/// NaN or infinite or a string that is not UTF-8, which JSON cannot hold.
inline std::string dump_json(const Json& value, int indent = -1) { return detail::dump_checked(value, indent); }

/// dump_json() of a value that keeps its key order.
inline std::string dump_json(const OrderedJson& value, int indent = -1) {
  return detail::dump_checked(value, indent);
}

/// Member `key` of `object`; throws FormatError "<what> has no member "<key>"" when there is
/// none or `object` is not an object.
inline const Json& json_at(const Json& object, const std::string& key, const std::string& what) {
  if (!object.is_object()) throw FormatError(what + " is not a JSON object");
  const auto it = object.find(key);
  if (it == object.end()) throw FormatError(what + " has no member \"" + key + "\"");
  return *it;
}

/// The string `value`; throws FormatError naming `what` and the value otherwise.
inline const std::string& json_string(const Json& value, const std::string& what) {
  if (!value.is_string()) throw FormatError(what + " is " + detail::json_excerpt(value) + ", not a string");
  return value.get_ref<const std::string&>();
}

/// The integer `value`, exact; throws FormatError naming `what` and the value unless it is a
/// JSON integer in [0, 2^64) (not a fraction, an exponent or 1.0).
inline std::uint64_t json_u64(const Json& value, const std::string& what) {
  if (!value.is_number_unsigned()) {
    throw FormatError(what + " is " + detail::json_excerpt(value) + ", not an integer in [0, 2^64)");
  }
  return value.get<std::uint64_t>();
}

/// The number `value` as a double; throws FormatError naming `what` and the value otherwise.
inline double json_number(const Json& value, const std::string& what) {
  if (!value.is_number()) throw FormatError(what + " is " + detail::json_excerpt(value) + ", not a number");
  return value.get<double>();
}

}  // namespace loftq::io
