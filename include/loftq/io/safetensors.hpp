/// @file io/safetensors.hpp
/// safetensors files: a reader that validates the header as the reference implementation does
/// and streams tensors with positioned reads (never the whole file), float16 / bfloat16
/// conversions, and an atomic writer that streams tensors from producers.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../detail/huge_pages.hpp"
#include "../matrix.hpp"
#include "error.hpp"
#include "file.hpp"
#include "json.hpp"

namespace loftq::io {

/// Element types of safetensors.
enum class Dtype : std::uint8_t { boolean, u8, i8, f8_e5m2, f8_e4m3, i16, u16, f16, bf16, i32, u32, f32, f64, i64, u64 };

namespace detail {

/// Name and element size of each Dtype, in enum order.
struct DtypeFacts {
  std::string_view name;  ///< The safetensors spelling.
  std::size_t size;       ///< Bytes per element.
};
inline constexpr DtypeFacts dtype_facts[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
    {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},      {"F64", 8},     {"I64", 8}, {"U64", 8}};

/// a * b, or false when it overflows 64 bits.
inline bool multiply_checked(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

/// The little-endian u64 at p.
inline std::uint64_t load_u64_le(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace detail

/// The safetensors name of a dtype ("F32", "BF16", ...).
inline std::string_view dtype_name(Dtype dtype) { return detail::dtype_facts[static_cast<int>(dtype)].name; }

/// Bytes per element of a dtype.
inline std::size_t dtype_size(Dtype dtype) { return detail::dtype_facts[static_cast<int>(dtype)].size; }

/// The dtype named `name`; throws FormatError naming it and `what` when there is none.
inline Dtype dtype_from_name(std::string_view name, const std::string& what) {
  for (std::size_t i = 0; i < std::size(detail::dtype_facts); ++i) {
    if (detail::dtype_facts[i].name == name) return static_cast<Dtype>(i);
  }
  throw FormatError(what + ": unknown dtype \"" + std::string(name) + "\"");
}

/// bfloat16 bits to float (exact), through Eigen::bfloat16.
inline float bf16_to_float(std::uint16_t bits) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(bits));
}

/// float to bfloat16 bits through Eigen::bfloat16: rounds to nearest even, overflow gives
/// infinity, a NaN gives the quiet NaN 0x7FC0 with the NaN's sign (0xFFC0).
inline std::uint16_t float_to_bf16(float value) {
  return Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(value));
}

/// IEEE float16 bits to float (exact), through Eigen::half.
inline float f16_to_float(std::uint16_t bits) { return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits)); }

/// float to IEEE float16 bits through Eigen::half: rounds to nearest even (subnormals too),
/// overflow gives infinity, a NaN gives the quiet NaN 0x7E00 with the NaN's sign.
inline std::uint16_t float_to_f16(float value) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(value)); }

/// One tensor of a safetensors file.
struct TensorInfo {
  std::string name;                  ///< Its key.
  Dtype dtype = Dtype::f32;          ///< Element type.
  std::vector<std::uint64_t> shape;  ///< Dimensions, outermost first (row-major).
  std::uint64_t begin = 0;           ///< First byte, from the start of the data buffer.
  std::uint64_t end = 0;             ///< One past the last byte.

  /// Number of elements (1 for a scalar).
  std::uint64_t elements() const {
    std::uint64_t n = 1;
    for (std::uint64_t d : shape) n *= d;
    return n;
  }
  /// Number of bytes.
  std::uint64_t bytes() const { return end - begin; }
};

/// A validated safetensors header.
struct SafetensorsHeader {
  std::uint64_t data_offset = 0;                                 ///< File offset of the data buffer.
  std::vector<TensorInfo> tensors;                               ///< Tensors, in the order of their data.
  std::vector<std::pair<std::string, std::string>> metadata;     ///< __metadata__ entries, by key.
};

/// Largest safetensors header accepted, as in the reference implementation.
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;

/// The header length in the first 8 bytes of a file of file_size bytes (`first` holds
/// min(8, file_size) of them). Throws FormatError, naming `what`, for a file shorter than 8
/// bytes or a length over max_safetensors_header_bytes or past the file's end.
inline std::uint64_t safetensors_header_length(const unsigned char* first, std::uint64_t file_size, const std::string& what) {
  if (file_size < 8) throw FormatError(what + ": " + std::to_string(file_size) + " bytes, too short for a safetensors header");
  const std::uint64_t length = detail::load_u64_le(first);
  if (length > max_safetensors_header_bytes) {
    throw FormatError(what + ": header length " + std::to_string(length) + " exceeds " +
                      std::to_string(max_safetensors_header_bytes));
  }
  if (length > file_size - 8) {
    throw FormatError(what + ": header length " + std::to_string(length) + " runs past the end of the " +
                      std::to_string(file_size) + "-byte file");
  }
  return length;
}

/// Validates `header` (the JSON text after the 8-byte length) of a file of file_size bytes. Throws
/// FormatError, naming `what`, for a header that is not a UTF-8 JSON object starting with '{',
/// an unknown dtype, a bad shape or offsets, a byte count that overflows or does not match its
/// shape, tensors that overlap or leave holes, a buffer that does not end at the file's end, or a
/// __metadata__ that is not string to string.
inline SafetensorsHeader parse_safetensors_header(std::string_view header, std::uint64_t file_size, const std::string& what) {
  if (header.empty() || header[0] != '{') throw FormatError(what + ": header does not start with '{'");
  if (file_size < 8 || header.size() > file_size - 8) throw FormatError(what + ": header runs past the end of the file");
  const Json json = parse_json(header, what + " header");
  SafetensorsHeader result;
  result.data_offset = 8 + header.size();
  if (!json.is_object()) throw FormatError(what + ": header is not a JSON object");
  for (const auto& member : json.items()) {
    const std::string& name = member.key();
    const Json& entry = member.value();
    const std::string where = what + ": tensor \"" + name + "\"";
    if (name == "__metadata__") {
      if (!entry.is_object()) throw FormatError(what + ": __metadata__ is not an object");
      for (const auto& item : entry.items()) {
        result.metadata.emplace_back(item.key(),
                                     json_string(item.value(), what + ": __metadata__ value of \"" + item.key() + "\""));
      }
      continue;
    }
    if (!entry.is_object()) throw FormatError(where + " is not an object");
    TensorInfo info;
    info.name = name;
    const auto dtype = entry.find("dtype");
    const auto shape = entry.find("shape");
    const auto offsets = entry.find("data_offsets");
    if (dtype == entry.end() || shape == entry.end() || offsets == entry.end()) {
      throw FormatError(where + " needs dtype, shape and data_offsets");
    }
    info.dtype = dtype_from_name(json_string(*dtype, where + ": dtype"), where);
    if (!shape->is_array()) throw FormatError(where + ": shape is not an array");
    std::uint64_t elements = 1;
    for (const Json& d : *shape) {
      info.shape.push_back(json_u64(d, where + ": shape[" + std::to_string(info.shape.size()) + "]"));
      if (!detail::multiply_checked(elements, info.shape.back(), elements)) {
        throw FormatError(where + ": shape's element count overflows");
      }
    }
    std::uint64_t bytes = 0;
    if (!detail::multiply_checked(elements, dtype_size(info.dtype), bytes)) {
      throw FormatError(where + ": byte count overflows");
    }
    if (!offsets->is_array() || offsets->size() != 2) throw FormatError(where + ": data_offsets is not a pair");
    info.begin = json_u64((*offsets)[0], where + ": data_offsets[0]");
    info.end = json_u64((*offsets)[1], where + ": data_offsets[1]");
    if (info.end < info.begin) throw FormatError(where + ": data_offsets end before they begin");
    if (info.end - info.begin != bytes) {
      throw FormatError(where + ": data_offsets span " + std::to_string(info.end - info.begin) + " bytes, its " +
                        std::string(dtype_name(info.dtype)) + " shape needs " + std::to_string(bytes));
    }
    result.tensors.push_back(std::move(info));
  }
  std::stable_sort(result.tensors.begin(), result.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t expected = 0;
  for (const TensorInfo& t : result.tensors) {
    if (t.begin != expected) {
      throw FormatError(what + ": tensor \"" + t.name + "\" starts at " + std::to_string(t.begin) + ", expected " +
                        std::to_string(expected) + " (tensors overlap or leave a hole)");
    }
    expected = t.end;
  }
  const std::uint64_t buffer = file_size - result.data_offset;
  if (expected != buffer) {
    throw FormatError(what + ": tensors end at byte " + std::to_string(expected) + " of a " + std::to_string(buffer) +
                      "-byte data buffer; it must end at the file's end");
  }
  return result;
}

/// A safetensors file opened for reading. The constructor reads and validates the header only;
/// tensors are read on demand with positioned reads, so memory holds one tensor at a time.
class SafetensorsReader {
 public:
  /// Opens and validates `path`: throws FormatError as safetensors_header_length() and
  /// parse_safetensors_header() do, FileError when it cannot be opened or read.
  explicit SafetensorsReader(std::filesystem::path path) : file_(std::move(path)) {
    const std::string what = file_.path().string();
    unsigned char length[8] = {};
    file_.read(0, length, std::min<std::uint64_t>(8, file_.size()));
    std::string header(static_cast<std::size_t>(safetensors_header_length(length, file_.size(), what)), '\0');
    file_.read(8, header.data(), header.size());
    header_ = parse_safetensors_header(header, file_.size(), what);
    for (std::size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
  }

  /// The file's path.
  const std::filesystem::path& path() const { return file_.path(); }
  /// The tensors, in the order of their data.
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  /// The __metadata__ entries, in header order.
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return header_.metadata; }
  /// The tensor named `name`, or nullptr.
  const TensorInfo* find(std::string_view name) const {
    const auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &header_.tensors[it->second];
  }
  /// The tensor named `name`; throws ArgumentError naming it and the file when absent.
  const TensorInfo& at(std::string_view name) const {
    const TensorInfo* info = find(name);
    if (info == nullptr) throw ArgumentError(path().string() + " has no tensor \"" + std::string(name) + "\"");
    return *info;
  }

  /// Reads n bytes of `tensor`'s data from byte `offset` of it into dst; throws ArgumentError for
  /// bytes past the tensor's end, and as InputFile::read().
  void read_bytes(const TensorInfo& tensor, std::uint64_t offset, void* dst, std::size_t n) const {
    if (offset > tensor.bytes() || n > tensor.bytes() - offset) {
      throw ArgumentError(path().string() + ": " + std::to_string(n) + " bytes from byte " + std::to_string(offset) +
                          " run past the end of tensor " + tensor.name);
    }
    file_.read(header_.data_offset + tensor.begin + offset, dst, n);
  }
  /// The raw little-endian bytes of `tensor`.
  std::vector<std::uint8_t> read_raw(const TensorInfo& tensor) const {
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(tensor.bytes()));
    read_bytes(tensor, 0, bytes.data(), bytes.size());
    return bytes;
  }
  /// The elements of an F32, F16 or BF16 tensor as float32, row-major; throws ArgumentError for
  /// another dtype.
  std::vector<float> read_floats(const TensorInfo& tensor) const {
    std::vector<float> out(static_cast<std::size_t>(tensor.elements()));
    read_floats_into(tensor, out.data());
    return out;
  }
  /// read_floats() as a matrix of shape[0] rows and the product of the other dimensions as
  /// columns (a convolution kernel (c_out, c_in, k, k) becomes c_out x c_in k k, as in the
  /// LoftQ paper); a 1-D tensor is one row (on huge pages). Throws ArgumentError for a scalar.
  RowMatrixXf read_matrix(const TensorInfo& tensor) const {
    if (tensor.shape.empty()) throw ArgumentError(path().string() + ": tensor " + tensor.name + " is a scalar");
    const std::uint64_t rows = tensor.shape.size() == 1 ? 1 : tensor.shape[0];
    const std::uint64_t cols = rows == 0 ? 0 : tensor.elements() / rows;
    RowMatrixXf out;
    loftq::detail::resize_on_huge_pages(out, static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
    read_floats_into(tensor, out.data());
    return out;
  }

 private:
  void read_floats_into(const TensorInfo& tensor, float* out) const {
    const auto n = static_cast<std::size_t>(tensor.elements());
    if (tensor.dtype == Dtype::f32) {
      read_bytes(tensor, 0, out, n * sizeof(float));  // little-endian host
      return;
    }
    if (tensor.dtype != Dtype::f16 && tensor.dtype != Dtype::bf16) {
      throw ArgumentError(path().string() + ": tensor " + tensor.name + " has dtype " +
                          std::string(dtype_name(tensor.dtype)) + ", not F32, F16 or BF16");
    }
    constexpr std::size_t chunk = std::size_t{1} << 16;
    std::vector<std::uint16_t> halves(std::min(n, chunk));
    for (std::size_t first = 0; first < n; first += chunk) {
      const std::size_t count = std::min(chunk, n - first);
      read_bytes(tensor, first * 2, halves.data(), count * 2);
      for (std::size_t i = 0; i < count; ++i) {
        out[first + i] = tensor.dtype == Dtype::bf16 ? bf16_to_float(halves[i]) : f16_to_float(halves[i]);
      }
    }
  }

  InputFile file_;
  SafetensorsHeader header_;
  std::unordered_map<std::string, std::size_t> index_;
};

/// A tensor to write: its name, dtype and shape, and a function that appends exactly its bytes
/// (little-endian, row-major) through `emit`, in one or more calls. Producers run one at a
/// time, in file order, so only one tensor need be in memory.
struct TensorSource {
  /// Appends bytes to the file.
  using Emit = std::function<void(const void* data, std::size_t bytes)>;
  std::string name;                            ///< Key.
  Dtype dtype = Dtype::f32;                    ///< Element type.
  std::vector<std::uint64_t> shape;            ///< Dimensions, outermost first.
  std::function<void(const Emit& emit)> write;  ///< Produces the bytes.
};

/// A tensor held in memory.
struct TensorData {
  std::string name;                  ///< Key.
  Dtype dtype = Dtype::f32;          ///< Element type.
  std::vector<std::uint64_t> shape;  ///< Dimensions, outermost first.
  std::vector<std::uint8_t> bytes;   ///< Little-endian, row-major bytes.
};

/// A TensorSource that writes data's bytes (moved into it).
inline TensorSource source_of(TensorData data) {
  auto bytes = std::make_shared<std::vector<std::uint8_t>>(std::move(data.bytes));
  return {std::move(data.name), data.dtype, std::move(data.shape),
          [bytes](const TensorSource::Emit& emit) { emit(bytes->data(), bytes->size()); }};
}

/// A TensorSource that copies `tensor` of `file` byte for byte, in 16 MiB pieces, under its own
/// name; `file` must outlive the source.
inline TensorSource copied_tensor(const SafetensorsReader& file, const TensorInfo& tensor) {
  return {tensor.name, tensor.dtype, tensor.shape, [&file, &tensor](const TensorSource::Emit& emit) {
            constexpr std::uint64_t piece = std::uint64_t{1} << 24;
            std::vector<unsigned char> buffer(static_cast<std::size_t>(std::min(piece, tensor.bytes())));
            for (std::uint64_t first = 0; first < tensor.bytes(); first += piece) {
              const auto n = static_cast<std::size_t>(std::min(piece, tensor.bytes() - first));
              file.read_bytes(tensor, first, buffer.data(), n);
              emit(buffer.data(), n);
            }
          }};
}

/// A float32 tensor of a row-major matrix, stored as `dtype` (F32, F16 or BF16, rounded to
/// nearest even); throws ArgumentError for another dtype.
inline TensorData float_tensor(std::string name, const float* data, std::vector<std::uint64_t> shape, Dtype dtype) {
  TensorData t{std::move(name), dtype, std::move(shape), {}};
  std::uint64_t n = 1;
  for (std::uint64_t d : t.shape) n *= d;
  const auto count = static_cast<std::size_t>(n);
  if (dtype == Dtype::f32) {
    t.bytes.resize(count * 4);
    if (count > 0) std::memcpy(t.bytes.data(), data, count * 4);
  } else if (dtype == Dtype::f16 || dtype == Dtype::bf16) {
    t.bytes.resize(count * 2);
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint16_t h = dtype == Dtype::bf16 ? float_to_bf16(data[i]) : float_to_f16(data[i]);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
    }
  } else {
    throw ArgumentError("float_tensor: dtype " + std::string(dtype_name(dtype)) + " is not F32, F16 or BF16");
  }
  return t;
}

/// The order write_safetensors() stores tensors in: larger elements first, then by name, so that
/// every tensor starts at a multiple of its element size (as the reference writer does).
inline void sort_for_alignment(std::vector<TensorSource>& tensors) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorSource& a, const TensorSource& b) {
    const std::size_t sa = dtype_size(a.dtype), sb = dtype_size(b.dtype);
    return sa != sb ? sa > sb : a.name < b.name;
  });
}

/// Writes a safetensors file at `path` atomically (temporary file, then rename): header with
/// `metadata` (default {"format": "pt"}) padded with spaces to a multiple of 8 bytes, then the
/// tensors in sort_for_alignment() order, each produced by its source. Throws ArgumentError for
/// a duplicate or reserved name, a name or metadata that is not UTF-8, a byte-count overflow or
/// a producer that emits the wrong number of bytes, FileError when the file cannot be written,
/// and whatever a producer throws; in every case no file is left at `path`.
inline void write_safetensors(const std::filesystem::path& path, std::vector<TensorSource> tensors,
                              const std::vector<std::pair<std::string, std::string>>& metadata = {{"format", "pt"}}) {
  sort_for_alignment(tensors);
  std::vector<std::string_view> names;
  for (const TensorSource& t : tensors) names.emplace_back(t.name);
  std::sort(names.begin(), names.end());
  if (const auto twin = std::adjacent_find(names.begin(), names.end()); twin != names.end()) {
    throw ArgumentError("write_safetensors: duplicate tensor name \"" + std::string(*twin) + "\"");
  }
  Json header = Json::object();
  if (!metadata.empty()) {
    Json& meta = header["__metadata__"] = Json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
  }
  std::vector<std::uint64_t> sizes;
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorSource& t = tensors[i];
    if (t.name == "__metadata__") throw ArgumentError("write_safetensors: tensor name __metadata__ is reserved");
    std::uint64_t bytes = dtype_size(t.dtype);
    for (std::uint64_t d : t.shape) {
      if (!detail::multiply_checked(bytes, d, bytes)) {
        throw ArgumentError("write_safetensors: tensor \"" + t.name + "\" is too large");
      }
    }
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                     {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string text = dump_json(header);
  text.append((8 - (text.size() % 8)) % 8, ' ');
  AtomicFile file(path);
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  file.write(length, 8);
  file.write(text);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::uint64_t before = file.written();
    tensors[i].write([&](const void* data, std::size_t bytes) { file.write(data, bytes); });
    if (file.written() - before != sizes[i]) {
      throw ArgumentError("write_safetensors: tensor \"" + tensors[i].name + "\" produced " +
                               std::to_string(file.written() - before) + " bytes, expected " +
                               std::to_string(sizes[i]));
    }
  }
  file.commit();
}

}  // namespace loftq::io
