// Numerical edge cases of loftq(): no NaN or infinity ever leaves the library for finite input,
// on every instruction set.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <loftq/loftq.hpp>
#include <string>
#include <vector>

namespace {

/// A named test matrix and the rank to use on it.
struct Case {
  std::string name;
  Eigen::MatrixXf w;
  Eigen::Index rank;
  int block_size = 64;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  c.push_back({"zeros", Eigen::MatrixXf::Zero(40, 24), 4});
  c.push_back({"constant", Eigen::MatrixXf::Constant(40, 24, 0.5f), 4});
  c.push_back({"one row", Eigen::MatrixXf::Random(1, 300), 1});
  c.push_back({"one column", Eigen::MatrixXf::Random(300, 1), 1});
  c.push_back({"one element", Eigen::MatrixXf::Constant(1, 1, -3.0f), 1});
  c.push_back({"block larger than the matrix", Eigen::MatrixXf::Random(8, 8), 2, 4096});
  c.push_back({"near float max", Eigen::MatrixXf::Random(48, 40) * 3.0e38f, 4});
  c.push_back({"float max everywhere", Eigen::MatrixXf::Constant(16, 16, std::numeric_limits<float>::max()), 2});
  c.push_back({"denormals", Eigen::MatrixXf::Random(48, 40) * 1.0e-40f, 4});
  c.push_back({"smallest denormal", Eigen::MatrixXf::Constant(8, 8, std::numeric_limits<float>::denorm_min()), 2});
  c.push_back({"full rank", Eigen::MatrixXf::Random(30, 20), 20});
  const Eigen::MatrixXf low = Eigen::MatrixXf::Random(64, 3) * Eigen::MatrixXf::Random(3, 48);
  c.push_back({"exact low rank", low, 8});
  Eigen::MatrixXf spikes = Eigen::MatrixXf::Zero(64, 64);
  spikes(3, 5) = 1.0f;
  spikes(60, 1) = -2.0e30f;
  c.push_back({"isolated spikes", spikes, 4});
  return c;
}

bool all_finite(const Eigen::MatrixXf& m) { return m.allFinite(); }

TEST(EdgeCases, ScalingByAPowerOfTwoScalesTheResultExactly) {
  const Eigen::MatrixXf w = Eigen::MatrixXf::Random(48, 40);
  const loftq::Result base = loftq::loftq(w, 4, 4, 3);
  for (const float scale : {0x1p100f, 0x1p-100f, 0x1p126f}) {
    const loftq::Result r = loftq::loftq(Eigen::MatrixXf(w * scale), 4, 4, 3);
    EXPECT_EQ(r.errors, base.errors) << scale;
    EXPECT_EQ(r.Q.codes(), base.Q.codes()) << scale;
    EXPECT_TRUE(r.A.isApprox(base.A * std::sqrt(scale), 1e-6f)) << scale;
  }
}

/// loftq() on the instruction set GetParam(): skipped, with the reason, when this CPU lacks it.
class IsaEdgeCases : public ::testing::TestWithParam<loftq::Isa> {
 protected:
  void SetUp() override {
    if (!loftq::isa_supported(GetParam())) {
      GTEST_SKIP() << "this CPU lacks " << loftq::name_of(GetParam());
    }
  }
  void TearDown() override { loftq::reset_isa(); }
};

/// The test's name suffix of an instruction set: "scalar", "avx2" or "avx512".
std::string isa_name(const ::testing::TestParamInfo<loftq::Isa>& isa) {
  return std::string(loftq::name_of(isa.param));
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, IsaEdgeCases,
                         ::testing::Values(loftq::Isa::scalar, loftq::Isa::avx2, loftq::Isa::avx512),
                         isa_name);

/// True when a and b hold the same floats, bit for bit.
bool same_bits(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

TEST_P(IsaEdgeCases, NoNaNLeavesTheSolverForFiniteInputAndTheResultIsTheScalarOne) {
  const loftq::Isa isa = GetParam();
  for (const Case& c : cases()) {
    for (const loftq::Codebook book : {loftq::Codebook::nf4, loftq::Codebook::nf2, loftq::Codebook::int8}) {
      loftq::Options options;
      options.rank = c.rank;
      options.iters = 3;
      options.codebook = book;
      options.block_size = c.block_size;
      const std::string where = c.name + ", " + std::string(loftq::name_of(book)) + ", " + std::string(loftq::name_of(isa));
      loftq::Result r;
      loftq::Result ref;
      try {
        loftq::force_isa(loftq::Isa::scalar);
        ref = loftq::loftq(c.w, options);
        loftq::force_isa(isa);
        r = loftq::loftq(c.w, options);
      } catch (const std::exception& e) {
        ADD_FAILURE() << where << ": " << e.what();
        continue;
      }
      EXPECT_TRUE(all_finite(r.Q.dequantize())) << where;
      EXPECT_TRUE(all_finite(r.A)) << where;
      EXPECT_TRUE(all_finite(r.B)) << where;
      EXPECT_TRUE(std::isfinite(r.quantization_error)) << where;
      for (double e : r.errors) EXPECT_TRUE(std::isfinite(e)) << where;
      EXPECT_LE(r.error(), r.quantization_error * (1 + 1e-6) + 1e-12) << where;
      EXPECT_EQ(r.Q.codes(), ref.Q.codes()) << where;
      EXPECT_TRUE(same_bits(r.Q.dequantize(), ref.Q.dequantize())) << where;
      EXPECT_TRUE(same_bits(r.A, ref.A)) << where;
      EXPECT_TRUE(same_bits(r.B, ref.B)) << where;
      EXPECT_EQ(r.errors, ref.errors) << where;
      EXPECT_EQ(r.iteration, ref.iteration) << where;
    }
  }
}

TEST(EdgeCases, FullRankIsReconstructed) {
  for (const Case& c : cases()) {
    if (c.name != "full rank") continue;
    const loftq::Result r = loftq::loftq(c.w, c.rank, 4, 2);
    EXPECT_LT(r.error(), 1e-5) << c.name;
  }
}

}  // namespace
