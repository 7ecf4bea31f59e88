/// @file io/error.hpp
/// The exceptions of the I/O layer: every failure an io function throws is an io::Error, so one
/// `catch (const loftq::io::Error&)` handles them all; the children say what kind it is.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace loftq::io {

/// The base of every exception the I/O layer throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file or document that is malformed, truncated or unsupported; the message names the file
/// (or document) and the fault.
class FormatError : public Error {
 public:
  using Error::Error;
};

/// A bad argument to an io function; the message names the argument and its value.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

/// A file the operating system could not open, read, write, rename or create; carries the path
/// and the system's error code.
class FileError : public Error {
 public:
  /// `message` is the whole text (it should name the operation and the path).
  FileError(const std::string& message, std::filesystem::path path, std::error_code code)
      : Error(message), path_(std::move(path)), code_(code) {}
  /// The file concerned.
  const std::filesystem::path& path() const noexcept { return path_; }
  /// Why it failed.
  const std::error_code& code() const noexcept { return code_; }

 private:
  std::filesystem::path path_;
  std::error_code code_;
};

namespace detail {

/// The FileError "<operation> <path>: <reason of code>".
inline FileError file_error(const std::string& operation, const std::filesystem::path& path,
                            std::error_code code) {
  return FileError(operation + " " + path.string() + ": " + code.message(), path, code);
}

}  // namespace detail

}  // namespace loftq::io
