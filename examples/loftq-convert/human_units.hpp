/// @file human_units.hpp
/// Sizes and durations as people read them ("1.5 MB", "2m05s").
#pragma once

#include <cstdio>
#include <string>

namespace loftq_convert {

/// `bytes` in B, KB, MB, GB or TB (powers of 1000), one decimal.
inline std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 4) {
    bytes /= 1000.0;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", bytes, units[u]);
  return text;
}

/// `seconds` as "12.3s" below a minute, "2m05s" below an hour, else "1h02m".
inline std::string human_seconds(double seconds) {
  char text[32];
  const long s = static_cast<long>(seconds + 0.5);
  if (seconds < 60) {
    std::snprintf(text, sizeof text, "%.1fs", seconds);
  } else if (s >= 3600) {
    std::snprintf(text, sizeof text, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  } else {
    std::snprintf(text, sizeof text, "%ldm%02lds", s / 60, s % 60);
  }
  return text;
}

}  // namespace loftq_convert
