/// @file io/file.hpp
/// POSIX files for the readers and writers: a read-only file with positioned reads, and an
/// output file written to a temporary name and renamed into place only when complete.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "error.hpp"

namespace loftq::io {

namespace detail {

/// The FileError of errno (or `code`), naming the operation and the path.
inline FileError os_error(const std::string& operation, const std::filesystem::path& path, int code = errno) {
  return file_error(operation, path, std::error_code(code, std::generic_category()));
}

/// A unique name beside `path` for its temporary: "<name>.partial-<pid>-<counter>".
inline std::filesystem::path temporary_beside(const std::filesystem::path& path) {
  static std::atomic<unsigned> counter{0};
  return path.parent_path() / (path.filename().string() + ".partial-" + std::to_string(::getpid()) + "-" +
                               std::to_string(counter.fetch_add(1)));
}

}  // namespace detail

/// A file opened read-only, read with positioned reads: it is never modified, and one file
/// may be read from several threads.
class InputFile {
 public:
  /// Opens `path`; throws FileError when it cannot or when it is not a regular file.
  explicit InputFile(std::filesystem::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw detail::os_error("cannot open", path_);
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int code = errno;
      ::close(fd_);
      throw detail::os_error("cannot stat", path_, code);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw detail::os_error("not a regular file:", path_, S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  /// Takes over other's file.
  InputFile(InputFile&& other) noexcept
      : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}
  /// Takes over other's file.
  InputFile& operator=(InputFile&& other) noexcept {
    if (this != &other) {
      if (fd_ >= 0) ::close(fd_);
      path_ = std::move(other.path_);
      fd_ = std::exchange(other.fd_, -1);
      size_ = other.size_;
    }
    return *this;
  }
  ~InputFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  /// The path it was opened with.
  const std::filesystem::path& path() const { return path_; }
  /// Its size in bytes when opened.
  std::uint64_t size() const { return size_; }

  /// Reads n bytes at `offset` into dst; throws FileError on a read error and FormatError when
  /// the file ends first (it was truncated after opening).
  void read(std::uint64_t offset, void* dst, std::size_t n) const {
    auto* out = static_cast<unsigned char*>(dst);
    while (n > 0) {
      const ::ssize_t got = ::pread(fd_, out, n, static_cast<::off_t>(offset));
      if (got < 0) {
        if (errno == EINTR) continue;
        throw detail::os_error("cannot read", path_);
      }
      if (got == 0) throw FormatError(path_.string() + ": file ended early (truncated?)");
      out += got;
      offset += static_cast<std::uint64_t>(got);
      n -= static_cast<std::size_t>(got);
    }
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

/// An output file written under a temporary name beside its path and renamed to the path by
/// commit(). Destroyed without commit() (say, by an exception), it removes the temporary: a
/// failed write leaves nothing behind and never a partial file at the path.
class AtomicFile {
 public:
  /// Creates the temporary for `path`; throws FileError when it cannot.
  explicit AtomicFile(std::filesystem::path path)
      : path_(std::move(path)), temporary_(detail::temporary_beside(path_)) {
    fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) throw detail::os_error("cannot create", temporary_);
    buffer_.reserve(buffer_bytes);
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temporary_.c_str());
  }

  /// Appends n bytes; throws FileError on a write error (a full disk, a file size limit).
  void write(const void* data, std::size_t n) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    if (buffer_.size() + n > buffer_bytes) flush();
    if (n >= buffer_bytes) {
      write_all(bytes, n);
    } else {
      buffer_.insert(buffer_.end(), bytes, bytes + n);
    }
    written_ += n;
  }
  /// Appends text.
  void write(std::string_view text) { write(text.data(), text.size()); }
  /// Bytes appended so far.
  std::uint64_t written() const { return written_; }

  /// Flushes, syncs and renames the temporary to the path, replacing any file there; throws
  /// FileError when one of these fails.
  void commit() {
    flush();
    if (::fsync(fd_) != 0) throw detail::os_error("cannot sync", temporary_);
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) throw detail::os_error("cannot close", temporary_);
    if (::rename(temporary_.c_str(), path_.c_str()) != 0) throw detail::os_error("cannot rename to", path_);
    committed_ = true;
  }

 private:
  static constexpr std::size_t buffer_bytes = std::size_t{1} << 20;

  void flush() {
    write_all(buffer_.data(), buffer_.size());
    buffer_.clear();
  }

  void write_all(const unsigned char* bytes, std::size_t n) {
    while (n > 0) {
      const ::ssize_t put = ::write(fd_, bytes, n);
      if (put < 0) {
        if (errno == EINTR) continue;
        throw detail::os_error("cannot write", temporary_);
      }
      bytes += put;
      n -= static_cast<std::size_t>(put);
    }
  }

  std::filesystem::path path_;
  std::filesystem::path temporary_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<unsigned char> buffer_;
  std::uint64_t written_ = 0;
};

/// Writes `text` to `path` atomically (temporary file, then rename); throws FileError when it
/// cannot.
inline void write_file_atomically(const std::filesystem::path& path, std::string_view text) {
  AtomicFile file(path);
  file.write(text);
  file.commit();
}

/// The whole content of a (small) file; throws FileError or FormatError when it cannot be read
/// (as InputFile does), FormatError when it is larger than max_bytes.
inline std::string read_small_file(const std::filesystem::path& path, std::uint64_t max_bytes = 100'000'000) {
  const InputFile file(path);
  if (file.size() > max_bytes) {
    throw FormatError(path.string() + " is " + std::to_string(file.size()) + " bytes, more than " +
                                std::to_string(max_bytes));
  }
  std::string text(static_cast<std::size_t>(file.size()), '\0');
  file.read(0, text.data(), text.size());
  return text;
}

}  // namespace loftq::io
