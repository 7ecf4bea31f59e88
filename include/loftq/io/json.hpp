/// @file io/json.hpp
/// A small, strict JSON value: what safetensors headers, sharded indexes, bitsandbytes quant
/// states, PEFT configs and reports need. Numbers keep their text, so 64-bit offsets read back
/// exactly; objects keep their key order; parsing rejects duplicate keys, invalid UTF-8 and
/// nesting deeper than 64.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loftq::io {

/// A file or document that does not follow its format; the message names the file and the fault.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A JSON value: null, boolean, number, string, array or object.
class Json {
 public:
  /// The kind of a value.
  enum class Kind : std::uint8_t { null, boolean, number, string, array, object };
  /// One member of an object.
  using Member = std::pair<std::string, Json>;

  /// null.
  Json() = default;
  /// A boolean.
  Json(bool value) : kind_(Kind::boolean), boolean_(value) {}  // NOLINT(google-explicit-constructor)
  /// A string.
  Json(std::string value) : kind_(Kind::string), text_(std::move(value)) {}  // NOLINT
  /// A string.
  Json(const char* value) : Json(std::string(value)) {}  // NOLINT
  /// An integer.
  Json(long long value) : kind_(Kind::number), text_(std::to_string(value)) {}  // NOLINT
  /// An integer.
  Json(long value) : Json(static_cast<long long>(value)) {}  // NOLINT
  /// An integer.
  Json(int value) : Json(static_cast<long long>(value)) {}  // NOLINT
  /// An unsigned integer.
  Json(unsigned long long value) : kind_(Kind::number), text_(std::to_string(value)) {}  // NOLINT
  /// An unsigned integer.
  Json(unsigned long value) : Json(static_cast<unsigned long long>(value)) {}  // NOLINT
  /// A number; written with 17 significant digits (exact for a double). Throws
  /// std::invalid_argument for NaN or infinity, which JSON cannot hold.
  Json(double value) : kind_(Kind::number) {  // NOLINT
    if (!std::isfinite(value)) throw std::invalid_argument("Json: number " + std::to_string(value) + " is not finite");
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.17g", value);
    text_ = buffer;
  }

  /// A number with exactly this JSON text (not checked; for fixed-width output).
  static Json number_text(std::string text) {
    Json j;
    j.kind_ = Kind::number;
    j.text_ = std::move(text);
    return j;
  }
  /// An empty array.
  static Json array() {
    Json j;
    j.kind_ = Kind::array;
    return j;
  }
  /// An empty object.
  static Json object() {
    Json j;
    j.kind_ = Kind::object;
    return j;
  }

  /// The kind of this value.
  Kind kind() const { return kind_; }
  /// True for an object.
  bool is_object() const { return kind_ == Kind::object; }
  /// True for an array.
  bool is_array() const { return kind_ == Kind::array; }
  /// True for a string.
  bool is_string() const { return kind_ == Kind::string; }
  /// True for a number.
  bool is_number() const { return kind_ == Kind::number; }

  /// The boolean; throws FormatError for another kind.
  bool as_bool() const {
    expect(Kind::boolean, "a boolean");
    return boolean_;
  }
  /// The string; throws FormatError for another kind.
  const std::string& as_string() const {
    expect(Kind::string, "a string");
    return text_;
  }
  /// The number as a non-negative integer; throws FormatError unless it is one below 2^64.
  std::uint64_t as_u64() const {
    expect(Kind::number, "a number");
    std::uint64_t value = 0;
    if (text_.empty()) fail_value("a non-negative integer");
    for (char c : text_) {
      if (c < '0' || c > '9') fail_value("a non-negative integer");
      const auto digit = static_cast<std::uint64_t>(c - '0');
      if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) fail_value("an integer below 2^64");
      value = value * 10 + digit;
    }
    return value;
  }
  /// The number as a double; throws FormatError for another kind.
  double as_double() const {
    expect(Kind::number, "a number");
    return std::strtod(text_.c_str(), nullptr);
  }
  /// The number's JSON text.
  const std::string& number_text() const {
    expect(Kind::number, "a number");
    return text_;
  }

  /// The elements of an array; throws FormatError for another kind.
  const std::vector<Json>& elements() const {
    expect(Kind::array, "an array");
    return elements_;
  }
  /// The members of an object, in order; throws FormatError for another kind.
  const std::vector<Member>& members() const {
    expect(Kind::object, "an object");
    return members_;
  }
  /// The member named `key`, or nullptr; throws FormatError unless this is an object.
  const Json* find(std::string_view key) const {
    for (const Member& m : members()) {
      if (m.first == key) return &m.second;
    }
    return nullptr;
  }
  /// The member named `key`; throws FormatError when there is none.
  const Json& at(std::string_view key) const {
    const Json* value = find(key);
    if (value == nullptr) throw FormatError("JSON object has no member \"" + std::string(key) + "\"");
    return *value;
  }

  /// Appends an element to an array (null becomes an empty array); returns it.
  Json& push_back(Json value) {
    if (kind_ == Kind::null) kind_ = Kind::array;
    expect(Kind::array, "an array");
    elements_.push_back(std::move(value));
    return elements_.back();
  }
  /// Sets member `key` (appended when new; null becomes an empty object); returns it.
  Json& set(std::string key, Json value) {
    if (kind_ == Kind::null) kind_ = Kind::object;
    expect(Kind::object, "an object");
    for (Member& m : members_) {
      if (m.first == key) return m.second = std::move(value);
    }
    members_.emplace_back(std::move(key), std::move(value));
    return members_.back().second;
  }

  /// The JSON text: compact when indent < 0, else members and elements on their own lines,
  /// indented by `indent` spaces per level. Separators are ", " and ": " when compact, as
  /// Python's json.dumps writes them.
  std::string dump(int indent = -1) const {
    std::string out;
    write(out, indent, 0);
    return out;
  }

 private:
  friend class JsonParser;

  void expect(Kind kind, const char* what) const {
    if (kind_ != kind) throw FormatError(std::string("JSON value is not ") + what);
  }
  [[noreturn]] void fail_value(const char* what) const {
    throw FormatError("JSON number " + text_ + " is not " + what);
  }

  static void write_string(std::string& out, const std::string& s) {
    out += '"';
    for (char c : s) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buffer[8];
            std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
            out += buffer;
          } else {
            out += c;
          }
      }
    }
    out += '"';
  }

  void write(std::string& out, int indent, int level) const {
    const auto newline = [&](int depth) {
      if (indent < 0) return;
      out += '\n';
      out.append(static_cast<std::size_t>(indent * depth), ' ');
    };
    switch (kind_) {
      case Kind::null: out += "null"; break;
      case Kind::boolean: out += boolean_ ? "true" : "false"; break;
      case Kind::number: out += text_; break;
      case Kind::string: write_string(out, text_); break;
      case Kind::array:
        out += '[';
        for (std::size_t i = 0; i < elements_.size(); ++i) {
          if (i > 0) out += indent < 0 ? ", " : ",";
          newline(level + 1);
          elements_[i].write(out, indent, level + 1);
        }
        if (!elements_.empty()) newline(level);
        out += ']';
        break;
      case Kind::object:
        out += '{';
        for (std::size_t i = 0; i < members_.size(); ++i) {
          if (i > 0) out += indent < 0 ? ", " : ",";
          newline(level + 1);
          write_string(out, members_[i].first);
          out += ": ";
          members_[i].second.write(out, indent, level + 1);
        }
        if (!members_.empty()) newline(level);
        out += '}';
        break;
    }
  }

  Kind kind_ = Kind::null;
  bool boolean_ = false;
  std::string text_;  // string value or number text
  std::vector<Json> elements_;
  std::vector<Member> members_;
};

/// The strict recursive-descent parser behind parse_json().
class JsonParser {
 public:
  /// Deepest nesting of arrays and objects accepted.
  static constexpr int max_depth = 64;
  /// Most values in one document (a safetensors header of 100,000 tensors has about 10^6): a
  /// bound on the memory a hostile document can make the parser take.
  static constexpr std::size_t max_values = std::size_t{1} << 22;

  /// Parses `text`; `what` names the document in error messages.
  JsonParser(std::string_view text, std::string what) : text_(text), what_(std::move(what)) {}

  /// The one value of the document; throws FormatError for anything else.
  Json parse() {
    skip_space();
    Json value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the value");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw FormatError(what_ + ": invalid JSON at byte " + std::to_string(pos_) + ": " + why);
  }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool take(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) fail("unknown literal");
    pos_ += word.size();
  }

  Json parse_value(int depth) {
    if (pos_ >= text_.size()) fail("unexpected end");
    if (++values_ > max_values) fail("more than " + std::to_string(max_values) + " values");
    switch (text_[pos_]) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Json(parse_string());
      case 't': literal("true"); return Json(true);
      case 'f': literal("false"); return Json(false);
      case 'n': literal("null"); return Json();
      default: return parse_number();
    }
  }

  Json parse_object(int depth) {
    if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
    ++pos_;  // '{'
    Json object = Json::object();
    skip_space();
    if (take('}')) return object;
    for (;;) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') fail("expected a string key");
      std::string key = parse_string();
      skip_space();
      if (!take(':')) fail("expected ':'");
      skip_space();
      Json value = parse_value(depth);
      object.members_.emplace_back(std::move(key), std::move(value));
      skip_space();
      if (take('}')) break;
      if (!take(',')) fail("expected ',' or '}'");
    }
    check_unique_keys(object);
    return object;
  }

  void check_unique_keys(const Json& object) const {
    std::vector<std::string_view> keys;
    keys.reserve(object.members_.size());
    for (const Json::Member& m : object.members_) keys.emplace_back(m.first);
    std::sort(keys.begin(), keys.end());
    for (std::size_t i = 1; i < keys.size(); ++i) {
      if (keys[i] == keys[i - 1]) {
        throw FormatError(what_ + ": invalid JSON: duplicate key \"" + std::string(keys[i]) + "\"");
      }
    }
  }

  Json parse_array(int depth) {
    if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
    ++pos_;  // '['
    Json array = Json::array();
    skip_space();
    if (take(']')) return array;
    for (;;) {
      skip_space();
      array.elements_.push_back(parse_value(depth));
      skip_space();
      if (take(']')) break;
      if (!take(',')) fail("expected ',' or ']'");
    }
    return array;
  }

  Json parse_number() {
    const std::size_t start = pos_;
    const auto digits = [&] {
      const std::size_t first = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ - first;
    };
    take('-');
    if (take('0')) {
      // a leading zero stands alone
    } else if (digits() == 0) {
      fail("expected a value");
    }
    if (take('.') && digits() == 0) fail("expected digits after '.'");
    if (take('e') || take('E')) {
      if (!take('+')) take('-');
      if (digits() == 0) fail("expected exponent digits");
    }
    return Json::number_text(std::string(text_.substr(start, pos_ - start)));
  }

  unsigned hex4() {
    if (text_.size() - pos_ < 4) fail("short \\u escape");
    unsigned value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      value <<= 4;
      if (c >= '0' && c <= '9') value |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') value |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') value |= static_cast<unsigned>(c - 'A' + 10);
      else fail("bad \\u escape");
    }
    return value;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  /// Length of the valid UTF-8 sequence at pos_ (a byte >= 0x80), or 0.
  std::size_t utf8_length() const {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text_[pos_ + i]); };
    const unsigned char lead = byte(0);
    std::size_t length = 0;
    unsigned code = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      code = lead & 0x1Fu;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      code = lead & 0x0Fu;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      code = lead & 0x07u;
    } else {
      return 0;
    }
    if (text_.size() - pos_ < length) return 0;
    for (std::size_t i = 1; i < length; ++i) {
      if ((byte(i) & 0xC0) != 0x80) return 0;
      code = (code << 6) | (byte(i) & 0x3Fu);
    }
    const unsigned least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < least[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
    return length;
  }

  std::string parse_string() {
    ++pos_;  // '"'
    std::string out;
    for (;;) {
      if (pos_ >= text_.size()) fail("unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (static_cast<unsigned char>(c) >= 0x80) {
        const std::size_t length = utf8_length();
        if (length == 0) fail("invalid UTF-8");
        out.append(text_.substr(pos_, length));
        pos_ += length;
        continue;
      }
      ++pos_;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) fail("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xD800 && code <= 0xDBFF) {
            if (!take('\\') || !take('u')) fail("unpaired surrogate");
            const unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("unpaired surrogate");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else if (code >= 0xDC00 && code <= 0xDFFF) {
            fail("unpaired surrogate");
          }
          append_utf8(out, code);
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  std::string_view text_;
  std::string what_;
  std::size_t pos_ = 0;
  std::size_t values_ = 0;
};

/// Parses the JSON document `text`; `what` (e.g. a file name) starts every error message.
/// Throws FormatError for invalid JSON, invalid UTF-8, a duplicate key, nesting deeper than
/// JsonParser::max_depth or more than JsonParser::max_values values.
inline Json parse_json(std::string_view text, const std::string& what = "JSON") {
  return JsonParser(text, what).parse();
}

}  // namespace loftq::io
