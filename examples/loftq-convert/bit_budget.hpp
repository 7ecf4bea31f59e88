/// @file bit_budget.hpp
/// The bit-budget policy: 2 or 4 bits per target for an average of at most B bits, with the
/// least total squared error.
#pragma once

#include <algorithm>
#include <cstdint>
#include <loftq/io/checkpoint.hpp>
#include <string>
#include <vector>

#include "options.hpp"
#include "progress.hpp"
#include "report.hpp"
#include "run_target.hpp"
#include "targets.hpp"

namespace loftq_convert {

/// Chooses NF2 or NF4 for each of `targets` so that the average bits per weight stay within
/// options.bits_budget (which must be set) while the total squared error is least: measures
/// every target at both (LoftQ with the options' rank and steps), starts all at 2 bits and
/// upgrades greedily by squared error saved per extra bit while the budget allows. Returns what
/// it chose, in words.
inline std::string choose_bits_by_budget(const loftq::io::Checkpoint& checkpoint, std::vector<Target>& targets,
                                         const ConvertOptions& options, const Progress& progress) {
  struct Gain {
    std::size_t target;
    double saved;  // squared error saved by 4 bits over 2
    double bits;   // extra bits
  };
  std::vector<Gain> gains;
  double elements = 0.0;
  std::uint64_t bytes = 0;
  for (const Target& t : targets) bytes += t.info.bytes();
  if (progress.begin) progress.begin("measure 2 and 4 bits", targets.size(), bytes);
  std::uint64_t done = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    double squared[2];
    for (int k = 0; k < 2; ++k) {
      TargetReport report;
      double norm2 = 0.0;
      const loftq::Result r =
          run_target(checkpoint, targets[i], options, k == 0 ? loftq::Codebook::nf2 : loftq::Codebook::nf4, report, &norm2);
      squared[k] = r.error() * r.error() * (norm2 > 0.0 ? norm2 : 1.0);
    }
    const auto n = static_cast<double>(targets[i].info.elements());
    gains.push_back({i, squared[0] - squared[1], 2.0 * n});
    elements += n;
    targets[i].codebook = loftq::Codebook::nf2;
    done += targets[i].info.bytes();
    if (progress.step) progress.step(targets[i].name, done);
  }
  std::stable_sort(gains.begin(), gains.end(), [](const Gain& a, const Gain& b) { return a.saved / a.bits > b.saved / b.bits; });
  double spare = (*options.bits_budget - 2.0) * elements;
  std::size_t upgraded = 0;
  double total_bits = 2.0 * elements;
  for (const Gain& g : gains) {
    if (g.bits <= spare + 1e-9 * elements) {
      targets[g.target].codebook = loftq::Codebook::nf4;
      spare -= g.bits;
      total_bits += g.bits;
      ++upgraded;
    }
  }
  return "bits budget " + std::to_string(*options.bits_budget) + ": " + std::to_string(upgraded) + " of " +
         std::to_string(targets.size()) + " targets at 4 bits (NF4), the rest at 2 (NF2); average " +
         std::to_string(total_bits / elements) + " bits";
}

}  // namespace loftq_convert
