/// @file progress.hpp
/// Progress of a conversion: the events the engine sends, and their display on stderr.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "human_units.hpp"

namespace loftq_convert {

/// Progress events for a user interface; either may be empty.
struct Progress {
  /// Called when a phase starts: its name, its number of steps and the bytes it reads.
  std::function<void(const std::string& phase, std::size_t steps, std::uint64_t bytes)> begin;
  /// Called after each step: what it did and the bytes done so far in the phase.
  std::function<void(const std::string& name, std::uint64_t bytes)> step;
};

/// Progress on stderr: a bar redrawn in place on a terminal (tensors, bytes, ETA), a plain line
/// per step otherwise.
class ProgressDisplay {
 public:
  /// Draws a bar when stderr is a terminal, lines otherwise.
  ProgressDisplay() : terminal_(::isatty(2) != 0) {}

  /// Events that draw on this display, which must outlive them.
  Progress events() {
    Progress p;
    p.begin = [this](const std::string& phase, std::size_t steps, std::uint64_t bytes) {
      end_line();
      phase_ = phase;
      steps_ = steps;
      bytes_ = bytes;
      step_ = 0;
      start_ = std::chrono::steady_clock::now();
      std::fprintf(stderr, "%s: %zu steps, %s\n", phase.c_str(), steps, human_bytes(static_cast<double>(bytes)).c_str());
    };
    p.step = [this](const std::string& name, std::uint64_t done) { show(name, done); };
    return p;
  }

  /// Ends a bar left open on the terminal, before other output.
  void end_line() {
    if (open_line_) std::fputc('\n', stderr);
    open_line_ = false;
  }

 private:
  void show(const std::string& name, std::uint64_t done) {
    ++step_;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double fraction = bytes_ > 0 ? static_cast<double>(done) / static_cast<double>(bytes_) : 1.0;
    const double eta = fraction > 0 ? elapsed * (1.0 - fraction) / fraction : 0.0;
    const std::string counts = std::to_string(step_) + "/" + std::to_string(steps_) + "  " +
                               human_bytes(static_cast<double>(done)) + " / " + human_bytes(static_cast<double>(bytes_)) +
                               "  ETA " + human_seconds(eta);
    if (terminal_) {
      constexpr int width = 30;
      const int filled = static_cast<int>(fraction * width);
      std::string bar(static_cast<std::size_t>(filled), '#');
      bar.append(static_cast<std::size_t>(width - filled), '.');
      const std::string shown = name.size() > 40 ? "..." + name.substr(name.size() - 37) : name;
      std::fprintf(stderr, "\r\033[K%s [%s] %s  %s", phase_.c_str(), bar.c_str(), counts.c_str(), shown.c_str());
      open_line_ = true;
    } else {
      std::fprintf(stderr, "%s [%s] %s\n", phase_.c_str(), counts.c_str(), name.c_str());
    }
    std::fflush(stderr);
  }

  bool terminal_;
  bool open_line_ = false;
  std::string phase_;
  std::size_t steps_ = 0, step_ = 0;
  std::uint64_t bytes_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace loftq_convert
