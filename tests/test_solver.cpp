// loftq(): the pinned API, the promised error properties, agreement with a direct SVD, bad input.
#include <gtest/gtest.h>

#include <Eigen/SVD>
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "test_helpers.hpp"

namespace {

using loftq::Codebook;

/// ||W - Q - A B^T||_F / ||W||_F computed from the result's parts, in double.
double recomputed_error(const Eigen::MatrixXf& w, const loftq::Result& r) {
  const Eigen::MatrixXd approx = r.Q.dequantize().cast<double>() + (r.A * r.B.transpose()).cast<double>();
  return (w.cast<double>() - approx).norm() / w.cast<double>().norm();
}

/// An LLM-like weight: a decaying low-rank part, a Gaussian bulk and two outlier input channels.
Eigen::MatrixXf llm_like(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  Eigen::MatrixXf w = loftq_test::gaussian(rows, cols, 0.02f, seed);
  const Eigen::MatrixXf u = loftq_test::gaussian(rows, 8, 1.0f, seed + 1);
  const Eigen::MatrixXf v = loftq_test::gaussian(cols, 8, 1.0f, seed + 2);
  for (Eigen::Index k = 0; k < 8; ++k) w += (0.05f / static_cast<float>(1 + k)) * u.col(k) * v.col(k).transpose() / std::sqrt(static_cast<float>(rows));
  w.col(3) *= 8.0f;
  w.col(cols - 2) *= 12.0f;
  return w;
}

TEST(Loftq, PinnedApiGivesShapesAndTheErrorItReports) {
  const Eigen::MatrixXf W = llm_like(96, 80, 31);
  auto r = loftq::loftq(W, /*rank=*/16, /*bits=*/4, /*iters=*/5);
  Eigen::MatrixXf Qd = r.Q.dequantize();
  Eigen::MatrixXf A = r.A;
  Eigen::MatrixXf B = r.B;
  EXPECT_EQ(Qd.rows(), 96);
  EXPECT_EQ(Qd.cols(), 80);
  EXPECT_EQ(A.rows(), 96);
  EXPECT_EQ(A.cols(), 16);
  EXPECT_EQ(B.rows(), 80);
  EXPECT_EQ(B.cols(), 16);
  EXPECT_EQ(r.Q.codebook(), Codebook::nf4);
  EXPECT_EQ(r.Q.block_size(), 64);
  ASSERT_EQ(r.errors.size(), 5u);
  EXPECT_GE(r.iteration, 1);
  EXPECT_LE(r.iteration, 5);
  EXPECT_NEAR(recomputed_error(W, r), r.error(), 1e-6);
  auto q = loftq::quantize<loftq::NF4>(W, /*block_size=*/64);
  Eigen::MatrixXf D = q.dequantize();
  EXPECT_NEAR((W - D).norm() / W.norm(), r.quantization_error, 1e-6);
}

TEST(Loftq, BitsSelectNf2Nf4AndInt8) {
  const Eigen::MatrixXf w = loftq_test::gaussian(40, 50, 0.02f, 32);
  EXPECT_EQ(loftq::loftq(w, 4, 2, 1).Q.codebook(), Codebook::nf2);
  EXPECT_EQ(loftq::loftq(w, 4, 4, 1).Q.codebook(), Codebook::nf4);
  EXPECT_EQ(loftq::loftq(w, 4, 8, 1).Q.codebook(), Codebook::int8);
}

TEST(Loftq, OneStepIsBelowPlainQuantizationForEveryCodebook) {
  const Eigen::MatrixXf w = llm_like(64, 96, 33);
  for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::fp4, Codebook::uniform2, Codebook::uniform4,
                     Codebook::uniform8, Codebook::int8}) {
    loftq::Options o;
    o.rank = 8;
    o.iters = 1;
    o.codebook = c;
    const auto r = loftq::loftq(w, o);
    EXPECT_LT(r.error(), r.quantization_error) << loftq::name_of(c);
    EXPECT_EQ(r.Q.codebook(), c);
  }
}

TEST(Loftq, BestIterateErrorNeverRisesWithMoreSteps) {
  const Eigen::MatrixXf w = llm_like(80, 72, 34);
  for (int bits : {2, 4, 8}) {
    double previous = std::numeric_limits<double>::infinity();
    for (int t = 1; t <= 6; ++t) {
      const auto r = loftq::loftq(w, 8, bits, t);
      EXPECT_LE(r.error(), previous) << "bits " << bits << ", T = " << t;
      EXPECT_LE(r.error(), r.quantization_error);
      previous = r.error();
    }
  }
}

TEST(Loftq, MoreStepsExtendTheSameErrorSequence) {
  const Eigen::MatrixXf w = llm_like(50, 70, 35);
  const auto short_run = loftq::loftq(w, 6, 2, 2);
  const auto long_run = loftq::loftq(w, 6, 2, 5);
  ASSERT_EQ(long_run.errors.size(), 5u);
  EXPECT_EQ(short_run.errors[0], long_run.errors[0]);
  EXPECT_EQ(short_run.errors[1], long_run.errors[1]);
  EXPECT_EQ(short_run.quantization_error, long_run.quantization_error);
}

TEST(Loftq, EveryStepsErrorIsMeasuredOnItsOwnIterate) {
  // Steps before the last have their error measured by the next step's quantize pass, the last
  // by a pass of its own: the two agree bit for bit, and with the error recomputed from Q, A, B.
  const Eigen::MatrixXf w = llm_like(96, 80, 37);
  loftq::Options o;
  o.rank = 8;
  o.iters = 4;
  o.keep_best = false;  // the iterate of step `iters`
  const auto long_run = loftq::loftq(w, o);
  for (int t = 1; t <= 4; ++t) {
    o.iters = t;
    const auto r = loftq::loftq(w, o);
    ASSERT_EQ(r.iteration, t);
    EXPECT_EQ(r.error(), long_run.errors[static_cast<std::size_t>(t - 1)]) << t;
    EXPECT_NEAR(recomputed_error(w, r), r.error(), 1e-6) << t;
  }
}

TEST(Loftq, TwoBitLoftqImprovesOnItsFirstStep) {
  // With few levels the alternation pays: the best of five steps beats step one.
  const Eigen::MatrixXf w = llm_like(128, 128, 36);
  const auto r = loftq::loftq(w, 16, 2, 5);
  EXPECT_LT(r.error(), r.errors[0]);
}

TEST(Loftq, KeepBestFalseReturnsTheLastIterate) {
  const Eigen::MatrixXf w = llm_like(48, 40, 37);
  loftq::Options o;
  o.rank = 4;
  o.iters = 4;
  o.codebook = Codebook::nf2;
  o.keep_best = false;
  const auto last = loftq::loftq(w, o);
  EXPECT_EQ(last.iteration, 4);
  EXPECT_NEAR(recomputed_error(w, last), last.errors[3], 1e-6);
  o.keep_best = true;
  const auto best = loftq::loftq(w, o);
  EXPECT_EQ(best.errors, last.errors);
  EXPECT_EQ(best.error(), *std::min_element(best.errors.begin(), best.errors.end()));
}

TEST(Loftq, RandomizedSvdStaysCloseToTheExactSvdPath) {
  // 300 x 260 with rank 16: every randomized sketch is narrower than the matrix.
  const Eigen::MatrixXf w = llm_like(300, 260, 44);
  loftq::Options o;
  o.rank = 16;
  o.iters = 5;
  o.svd = loftq::SvdMethod::exact;
  const auto exact = loftq::loftq(w, o);
  for (loftq::SvdMethod method : {loftq::SvdMethod::block_krylov, loftq::SvdMethod::subspace_iteration}) {
    o.svd = method;
    for (bool warm : {true, false}) {
      o.warm_start = warm;
      const auto r = loftq::loftq(w, o);
      // Subspace iteration restarted cold at every step is the one weak combination.
      const double slack = method == loftq::SvdMethod::block_krylov ? 1.01 : warm ? 1.03 : 1.2;
      EXPECT_LT(r.error(), exact.error() * slack) << static_cast<int>(method) << " warm " << warm;
      EXPECT_LT(r.error(), r.quantization_error);
      EXPECT_NEAR(recomputed_error(w, r), r.error(), 1e-6);
    }
  }
  o.svd = loftq::SvdMethod::block_krylov;
  o.warm_start = true;
  EXPECT_LT(loftq::loftq(w, o).error(), exact.error() * 1.003);
}

TEST(Loftq, DefaultPathStaysCloseToTheExactPathOnGaussianAndHeavyTailedMatrices) {
  // 384 x 512: every rank-16 step and every warm rank-64 step is randomized; the cold rank-64
  // sketch (6 blocks of 68 columns) would be as wide as the matrix, so that step is the exact SVD
  // (benchmarks/README.md's accuracy table has randomized cold steps of rank 64). The ratio is
  // the error of the default path's returned iterate over the exact-SVD path's best error over
  // the same T (T = 1..5 are the prefixes of one 5-step run of each: more steps extend the same
  // error sequence). Measured largest: 1.00144 (seed 0), and at most 1.00191 over seeds 0..5; with
  // a cold depth of 5, 1.00209 (seed 0) and up to 1.0043 over seeds 0..5.
  struct Case {
    const char* name;
    Eigen::MatrixXf w;
  };
  const Case cases[] = {{"gaussian", loftq_test::gaussian(384, 512, 0.02f, 5)},
                        {"heavy_tailed_56", loftq_test::heavy_tailed(384, 512, {5.0f, 6.0f}, 1)},
                        {"heavy_tailed_760", loftq_test::heavy_tailed(384, 512, {4.5f, 64.0f}, 3)}};
  EXPECT_LT(loftq_test::kurtosis(cases[0].w), 3.2);
  EXPECT_GT(loftq_test::kurtosis(cases[1].w), 40.0);
  EXPECT_GT(loftq_test::kurtosis(cases[2].w), 500.0);
  double worst = 0.0;
  for (const Case& c : cases) {
    for (Codebook codebook : {Codebook::nf4, Codebook::nf2}) {
      for (Eigen::Index rank : {16, 64}) {
        loftq::Options o;
        o.rank = rank;
        o.iters = 5;
        o.codebook = codebook;
        const auto fast = loftq::loftq(c.w, o);
        o.svd = loftq::SvdMethod::exact;
        const auto exact = loftq::loftq(c.w, o);
        for (std::size_t t = 1; t <= 5; ++t) {
          const double ratio = *std::min_element(fast.errors.begin(), fast.errors.begin() + t) /
                               *std::min_element(exact.errors.begin(), exact.errors.begin() + t);
          worst = std::max(worst, ratio);
          EXPECT_LT(ratio, 1.002) << c.name << " " << loftq::name_of(codebook) << " rank " << rank << " T " << t;
        }
      }
    }
  }
  RecordProperty("worst_ratio_to_exact", std::to_string(worst));
}

TEST(Loftq, EachStepTakesTheKrylovDepthItsSpectrumNeeds) {
  // A flat spectrum (Gaussian W) keeps the cold step at its most blocks; a warm step starts from
  // B_{t-1} and needs fewer; a zero tolerance takes the most everywhere, and the exact SVD none.
  const Eigen::MatrixXf w = loftq_test::gaussian(384, 512, 0.02f, 5);
  loftq::Options o;
  o.rank = 16;
  o.iters = 4;
  const auto adaptive = loftq::loftq(w, o);
  EXPECT_EQ(adaptive.krylov_depths.size(), 4U);
  EXPECT_EQ(adaptive.krylov_depths[0], o.krylov_depth);
  for (std::size_t t = 1; t < 4; ++t) {
    EXPECT_GE(adaptive.krylov_depths[t], 2) << t;
    EXPECT_LE(adaptive.krylov_depths[t], o.warm_krylov_depth) << t;
  }
  EXPECT_LT(*std::min_element(adaptive.krylov_depths.begin() + 1, adaptive.krylov_depths.end()), o.warm_krylov_depth);
  o.krylov_tolerance = 0.0;
  EXPECT_EQ(loftq::loftq(w, o).krylov_depths, (std::vector<int>{6, 3, 3, 3}));
  o.svd = loftq::SvdMethod::exact;
  EXPECT_EQ(loftq::loftq(w, o).krylov_depths, (std::vector<int>{0, 0, 0, 0}));
}

TEST(Loftq, ResultsDependOnTheSeedAndNotOnTheThreadCount) {
  const Eigen::MatrixXf w = llm_like(260, 200, 45);
  loftq::Options o;
  o.rank = 12;
  o.iters = 3;
  o.seed = 11;
  o.threads = 1;
  const auto one = loftq::loftq(w, o);
  o.threads = 2;
  const auto two = loftq::loftq(w, o);
  loftq::set_threads(2);
  o.threads = 0;
  const auto global = loftq::loftq(w, o);
  loftq::set_threads(0);
  for (const loftq::Result* r : {&two, &global}) {
    EXPECT_EQ(one.Q.codes(), r->Q.codes());
    EXPECT_EQ(one.Q.scales(), r->Q.scales());
    EXPECT_EQ(one.A, r->A);
    EXPECT_EQ(one.B, r->B);
    EXPECT_EQ(one.errors, r->errors);
  }
  o.seed = 12;
  EXPECT_NE(loftq::loftq(w, o).A, one.A);
}

TEST(Loftq, EveryIsaGivesTheSameResult) {
  const Eigen::MatrixXf w = llm_like(130, 150, 46);
  loftq::force_isa(loftq::Isa::scalar);
  const auto scalar = loftq::loftq(w, 8, 4, 3);
  for (loftq::Isa isa : {loftq::Isa::avx2, loftq::Isa::avx512}) {
    if (!loftq::isa_supported(isa)) continue;
    loftq::force_isa(isa);
    const auto r = loftq::loftq(w, 8, 4, 3);
    EXPECT_EQ(scalar.Q.codes(), r.Q.codes()) << loftq::name_of(isa);
    EXPECT_EQ(scalar.A, r.A) << loftq::name_of(isa);
    EXPECT_EQ(scalar.errors, r.errors) << loftq::name_of(isa);
  }
  loftq::reset_isa();
}

TEST(Loftq, OneStepLowRankPartIsTheTruncatedSvdOfWMinusQ) {
  const Eigen::MatrixXf w = llm_like(70, 50, 38);
  loftq::Options o;
  o.rank = 7;
  o.iters = 1;
  o.svd = loftq::SvdMethod::exact;
  const auto r = loftq::loftq(w, o);
  const Eigen::MatrixXd e = (w - loftq::quantize<loftq::NF4>(w).dequantize()).cast<double>();
  const Eigen::JacobiSVD<Eigen::MatrixXd> svd(e, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::MatrixXd direct =
      svd.matrixU().leftCols(7) * svd.singularValues().head(7).asDiagonal() * svd.matrixV().leftCols(7).transpose();
  const Eigen::MatrixXd ours = (r.A * r.B.transpose()).cast<double>();
  EXPECT_LT((ours - direct).norm() / direct.norm(), 1e-4);
  const Eigen::VectorXd a_norms = r.A.cast<double>().colwise().squaredNorm().transpose();
  EXPECT_TRUE(a_norms.isApprox(svd.singularValues().head(7), 1e-4));
}

TEST(Loftq, RowMajorColumnMajorAndExpressionInputsAgreeBitForBit) {
  const Eigen::MatrixXf col = llm_like(45, 70, 39);
  const loftq::RowMatrixXf row = col;
  const auto a = loftq::loftq(col, 5, 4, 3);
  const auto b = loftq::loftq(row, 5, 4, 3);
  const auto c = loftq::loftq(col.transpose().transpose(), 5, 4, 3);
  EXPECT_EQ(a.Q.codes(), b.Q.codes());
  EXPECT_EQ(a.Q.scales(), b.Q.scales());
  EXPECT_EQ(a.A, b.A);
  EXPECT_EQ(a.B, b.B);
  EXPECT_EQ(a.errors, b.errors);
  EXPECT_EQ(a.A, c.A);
  EXPECT_EQ(a.Q.codes(), c.Q.codes());
}

TEST(Loftq, TheQuantizePassRoundsTheResidualToBfloat16AsTheStandaloneRoundingDoes) {
  // Odd and even shapes, the fused kernels' path and the two-pass path of a 16-bit load path.
  for (const auto& [rows, cols] : {std::pair<Eigen::Index, Eigen::Index>{37, 21}, {64, 70}}) {
    for (const loftq::LoadPath path : {loftq::LoadPath{}, loftq::LoadPath{loftq::FloatType::bfloat16, true,
                                                                           loftq::FloatType::bfloat16}}) {
      const loftq::RowMatrixXf w = llm_like(rows, cols, 51);
      loftq::Options o;
      o.load_path = path;
      const auto n = static_cast<std::size_t>(rows * cols);
      loftq::detail::QuantizedArrays q{std::vector<std::uint8_t>(loftq::detail::packed_bytes(n, 4)),
                                       std::vector<float>((n + 63) / 64)};
      const Eigen::MatrixXf a = loftq_test::gaussian(rows, 2, 0.1f, 52), b = loftq_test::gaussian(cols, 2, 0.1f, 53);
      loftq::RowMatrixXf residual(rows, cols);
      loftq::detail::Bfloat16Matrix fused, standalone;
      loftq::detail::prepare_bfloat16(rows, cols, 3, fused);
      for (Eigen::Index i = 0; i < rows; ++i) {  // every word must be written
        for (Eigen::Index k = 0; k < fused.pairs(); ++k) fused.word(i, k) = 0xdeadbeefu;
      }
      const loftq::detail::ThreadScope scope;
      std::vector<loftq::detail::PassMemory> memory;
      loftq::detail::quantize_pass(w.data(), a, b, o, q, residual, memory, &fused);
      loftq::detail::round_to_bfloat16(residual, 3, standalone);
      EXPECT_EQ(fused.words, standalone.words) << rows << " x " << cols << ", plain " << path.is_plain();
      EXPECT_EQ(fused.exponent, 3);
    }
  }
}

TEST(Loftq, APassThatFormsTheResidualFromCodesMeasuresAndRoundsTheSameBits) {
  // Step 2's quantize pass and the last step's error pass, once reading the residual W - Q_1
  // kept in float and once forming it again from Q_1's codes, on every instruction set.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const Codebook book :
       {Codebook::nf4, Codebook::nf2, Codebook::fp4, Codebook::int8, Codebook::uniform8}) {
    for (const auto& [rows, cols] : {std::pair<Eigen::Index, Eigen::Index>{37, 21}, {64, 70}}) {
      for (const loftq::Isa isa : {loftq::Isa::scalar, loftq::Isa::avx2, loftq::Isa::avx512}) {
        if (!loftq::isa_supported(isa)) continue;
        loftq::force_isa(isa);
        const std::string where = std::string(loftq::name_of(isa)) + ", codebook " +
                                  std::to_string(static_cast<int>(book)) + ", " +
                                  std::to_string(rows) + " x " + std::to_string(cols);
        const loftq::RowMatrixXf w = llm_like(rows, cols, 61);
        loftq::Options o;
        o.codebook = book;
        const auto n = static_cast<std::size_t>(rows * cols);
        const auto arrays = [&] {
          return loftq::detail::QuantizedArrays{
              std::vector<std::uint8_t>(loftq::detail::packed_bytes(n, loftq::bits_of(book))),
              std::vector<float>((n + 63) / 64)};
        };
        const loftq::detail::ThreadScope scope;
        std::vector<loftq::detail::PassMemory> memory;
        loftq::detail::QuantizedArrays q1 = arrays();
        loftq::RowMatrixXf kept(rows, cols);
        loftq::detail::quantize_pass(w.data(), Eigen::MatrixXf(rows, 0), Eigen::MatrixXf(cols, 0),
                                     o, q1, kept, memory, nullptr);
        const Eigen::MatrixXf a = loftq_test::gaussian(rows, 2, 0.1f, 62),
                              b = loftq_test::gaussian(cols, 2, 0.1f, 63);
        loftq::detail::QuantizedArrays read = arrays(), formed = arrays();
        loftq::detail::Bfloat16Matrix read_rounded, formed_rounded;
        loftq::detail::prepare_bfloat16(rows, cols, 3, read_rounded);
        loftq::detail::prepare_bfloat16(rows, cols, 3, formed_rounded);
        loftq::RowMatrixXf untouched = loftq::RowMatrixXf::Constant(rows, cols, nan);
        double read_error2 = -1.0, formed_error2 = -2.0;
        const double read_norm2 = loftq::detail::quantize_pass(
            w.data(), a, b, o, read, kept, memory, &read_rounded, nullptr, &read_error2);
        const double formed_norm2 =
            loftq::detail::quantize_pass(w.data(), a, b, o, formed, untouched, memory,
                                         &formed_rounded, nullptr, &formed_error2, &q1, false);
        EXPECT_EQ(read_error2, formed_error2) << where;
        EXPECT_EQ(read_norm2, formed_norm2) << where;
        EXPECT_EQ(read.codes, formed.codes) << where;
        EXPECT_EQ(read.scales, formed.scales) << where;
        EXPECT_EQ(read_rounded.words, formed_rounded.words) << where;
        EXPECT_TRUE(untouched.array().isNaN().all()) << where;
        EXPECT_EQ(loftq::detail::squared_error(a, b, o, kept, memory),
                  loftq::detail::squared_error(a, b, o, untouched, memory, w.data(), &read))
            << where;
      }
    }
  }
  loftq::reset_isa();
}

TEST(Loftq, AReusedWorkspaceGivesTheSameBitsAsFreshCalls) {
  const Eigen::MatrixXf first = llm_like(260, 200, 47);
  const loftq::RowMatrixXf same_count = llm_like(200, 260, 48);  // row-major: no copy is made
  const Eigen::MatrixXf smaller = llm_like(130, 150, 49);
  const Eigen::MatrixXf tiny = llm_like(130, 150, 50) * 1e-25f;  // scaled by 2^k inside the call
  loftq::Options o;
  o.rank = 9;
  o.iters = 3;
  loftq::Workspace workspace;
  EXPECT_EQ(workspace.bytes(), 0u);
  auto expect_fresh = [&](const auto& w) {
    const loftq::Result reused = loftq::loftq(w, o, workspace);
    const loftq::Result fresh = loftq::loftq(w, o);
    EXPECT_EQ(reused.Q.codes(), fresh.Q.codes());
    EXPECT_EQ(reused.Q.scales(), fresh.Q.scales());
    EXPECT_EQ(reused.A, fresh.A);
    EXPECT_EQ(reused.B, fresh.B);
    EXPECT_EQ(reused.errors, fresh.errors);
  };
  expect_fresh(first);
  // At least the residual, W's row-major copy, and P and E P: 13 columns a block, 5 blocks.
  const std::size_t held = workspace.bytes();
  EXPECT_GE(held, sizeof(float) * (2 * 260 * 200 + 65 * (260 + 200)));
  expect_fresh(first);
  EXPECT_EQ(workspace.bytes(), held);  // nothing grows when the same size comes again
  expect_fresh(same_count);            // the residual and the basis are reused, the copy is kept
  // The bfloat16 residual's strips pad the columns to 64: 200 x 260 needs 5 strips of 200 rows
  // where 260 x 200 needs 4 of 260 (32 words a row); the tiles the passes E X keep (on kernels
  // that keep them: not the split ones) pad the rows to 64: 4 tiles of 130 pairs where there
  // were 5 of 100 (64 words a pair; the passes E^T Y keep theirs in the strips). A pass's run of
  // whole blocks (pass_run_rows()) grows from 32 rows of 200 to 64 rows of 260, and its copy of
  // B^T (9 rows) from rows of 13 cache lines to rows of 17 (low_rank_stride()). Nothing else
  // changes.
  const bool keeps_tiles =
      loftq::detail::bfloat16_kernels(loftq::active_isa()).split_product == nullptr;
  EXPECT_EQ(workspace.bytes(),
            held - sizeof(std::uint32_t) * 32 * (4 * 260 - 5 * 200) +
                (keeps_tiles ? sizeof(std::uint32_t) * 64 * (4 * 130 - 5 * 100) : 0) +
                sizeof(float) * (64 * 260 - 32 * 200) + sizeof(float) * 9 * 16 * (17 - 13));
  expect_fresh(smaller);
  expect_fresh(tiny);
  expect_fresh(first);
  workspace.release();
  EXPECT_EQ(workspace.bytes(), 0u);
  expect_fresh(smaller);
}

TEST(Loftq, SpareArraysHoldingAnotherQGiveTheSameBitsAsNewOnes) {
  // The spare arrays of a workspace keep the codes and scales of the last call's Q_t, which the
  // quantize passes write over, every byte: after a call on another matrix of the same size, a
  // reused workspace gives the bits of fresh, zeroed arrays. Every code width, whole and split
  // blocks (7 elements: blocks across rows and bytes), the fused passes and a load path's.
  const Eigen::MatrixXf before = llm_like(150, 84, 51) * 3.0f;
  const Eigen::MatrixXf w = llm_like(150, 84, 52);
  loftq::LoadPath float16;
  float16.quantized_from = loftq::FloatType::float16;
  float16.dequantized_to = loftq::FloatType::float16;
  for (loftq::Codebook book : {loftq::Codebook::nf2, loftq::Codebook::nf4, loftq::Codebook::int8,
                               loftq::Codebook::llm_int8}) {
    for (int block : {7, 64}) {
      for (const loftq::LoadPath& path : {loftq::LoadPath{}, float16}) {
        loftq::Options o;
        o.rank = 6;
        o.iters = 3;
        o.codebook = book;
        o.block_size = block;
        o.load_path = path;
        loftq::Workspace workspace;
        loftq::loftq(before, o, workspace);
        const loftq::Result reused = loftq::loftq(w, o, workspace);
        const loftq::Result fresh = loftq::loftq(w, o);
        const std::string where = std::string(loftq::name_of(book)) + ", block " +
                                  std::to_string(block) + (path.is_plain() ? "" : ", float16");
        EXPECT_EQ(reused.Q.codes(), fresh.Q.codes()) << where;
        EXPECT_EQ(reused.Q.scales(), fresh.Q.scales()) << where;
        EXPECT_EQ(reused.errors, fresh.errors) << where;
      }
    }
  }
}

TEST(Loftq, AWorkspaceKeepsTheArraysOfTheQNotReturned) {
  // T = 3 makes three arrays of codes and scales (Q_1, Q_2, Q_3 while Q_2 waits for its error)
  // and returns one; the workspace keeps the other two for the next call, which makes one. T = 1
  // makes one and keeps none. Everything else a workspace holds is the same for both.
  const Eigen::MatrixXf w = llm_like(260, 200, 47);
  loftq::Options o;
  o.rank = 9;
  loftq::Workspace workspace;
  o.iters = 1;
  loftq::loftq(w, o, workspace);
  const std::size_t one_step = workspace.bytes();
  workspace.release();
  o.iters = 3;
  const loftq::Result fresh = loftq::loftq(w, o, workspace);
  const std::size_t n = 260 * 200;
  const std::size_t arrays = loftq::detail::packed_bytes(n, 4) + sizeof(float) * ((n + 63) / 64);
  EXPECT_EQ(workspace.bytes(), one_step + 2 * arrays);
  const loftq::Result reused = loftq::loftq(w, o, workspace);  // quantizes into the kept arrays
  EXPECT_EQ(workspace.bytes(), one_step + 2 * arrays);
  EXPECT_EQ(reused.Q.codes(), fresh.Q.codes());
  EXPECT_EQ(reused.Q.scales(), fresh.Q.scales());
  EXPECT_EQ(reused.errors, fresh.errors);
}

#if defined(__linux__)
/// The VmFlags line of the mapping in /proc/self/smaps that holds `address`; "" when none does.
std::string mapping_flags(const void* address) {
  const auto at = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    std::uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> begin >> dash >> end && dash == '-') {
      inside = begin <= at && at < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line + " ";
    }
  }
  return "";
}

TEST(HugePages, TheSolversArraysTheSizeOfWAreAdvised) {
  if (!std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled")) {
    GTEST_SKIP() << "this kernel has no transparent huge pages";
  }
  loftq::RowMatrixXf residual;
  loftq::detail::resize_on_huge_pages(residual, 1024, 1024);  // 4 MiB
  EXPECT_NE(mapping_flags(residual.data() + residual.size() / 2).find(" hg "), std::string::npos)
      << mapping_flags(residual.data() + residual.size() / 2);
  const std::vector<std::uint8_t> codes = loftq::detail::zeros_on_huge_pages<std::uint8_t>(std::size_t{4} << 20);
  EXPECT_NE(mapping_flags(codes.data() + codes.size() / 2).find(" hg "), std::string::npos);
  EXPECT_TRUE(std::all_of(codes.begin(), codes.end(), [](std::uint8_t c) { return c == 0; }));
}
#endif

TEST(Loftq, ShapesThatAreNotAMultipleOfTheBlockWork) {
  for (auto [rows, cols] : {std::pair{13, 7}, std::pair{1, 100}, std::pair{100, 1}, std::pair{33, 65}}) {
    const Eigen::MatrixXf w = loftq_test::gaussian(rows, cols, 0.02f, 40);
    const auto r = loftq::loftq(w, 1, 4, 2);
    EXPECT_EQ(r.Q.blocks(), (static_cast<std::size_t>(rows * cols) + 63) / 64);
    EXPECT_NEAR(recomputed_error(w, r), r.error(), 1e-6);
    EXPECT_LE(r.error(), r.quantization_error);
  }
}

TEST(Loftq, RankZeroIsThePlainQuantization) {
  const Eigen::MatrixXf w = llm_like(30, 40, 41);
  const auto r = loftq::loftq(w, 0, 4, 3);
  EXPECT_EQ(r.A.rows(), 30);
  EXPECT_EQ(r.A.cols(), 0);
  EXPECT_EQ(r.B.rows(), 40);
  EXPECT_EQ(r.B.cols(), 0);
  EXPECT_EQ(r.Q.codes(), loftq::quantize<loftq::NF4>(w).codes());
  for (double e : r.errors) EXPECT_EQ(e, r.quantization_error);
}

TEST(Loftq, FullRankReconstructsW) {
  const Eigen::MatrixXf w = loftq_test::gaussian(20, 12, 0.02f, 42);
  const auto r = loftq::loftq(w, 12, 2, 1);
  EXPECT_LT(r.error(), 1e-5);
}

TEST(Loftq, ZeroMatrixGivesZeroErrorAndNoNaN) {
  const auto r = loftq::loftq(Eigen::MatrixXf::Zero(10, 20), 3, 4, 2);
  EXPECT_EQ(r.quantization_error, 0.0);
  EXPECT_EQ(r.error(), 0.0);
  EXPECT_TRUE(r.A.allFinite());
  EXPECT_TRUE(r.Q.dequantize().isZero(0.0f));
}

TEST(Loftq, BadInputThrowsNamingTheArgumentAndValue) {
  using loftq_test::invalid_argument_message;
  const Eigen::MatrixXf w = loftq_test::gaussian(8, 6, 0.02f, 43);
  auto message = [&](auto&& call) { return invalid_argument_message(call); };
  auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                                 : ::testing::AssertionFailure() << '"' << text << "\" lacks \"" << part << '"';
  };
  Eigen::MatrixXf bad = w;
  bad(5, 4) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(has(message([&] { loftq::loftq(bad, 2, 4, 1); }), "W has a non-finite value nan at (row 5, col 4)"));
  bad(5, 4) = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(has(message([&] { loftq::loftq(bad, 2, 4, 1); }), "inf at (row 5, col 4)"));
  // A W large enough for the streamed row-major copy, which measures W's magnitude on the way;
  // a row-major W, which a pass of its own measures.
  Eigen::MatrixXf large = loftq_test::gaussian(1024, 1024, 0.02f, 44);
  large(1000, 1023) = -std::numeric_limits<float>::infinity();
  EXPECT_TRUE(has(message([&] { loftq::loftq(large, 2, 4, 1); }), "-inf at (row 1000, col 1023)"));
  const loftq::RowMatrixXf large_row_major = large;
  EXPECT_TRUE(has(message([&] { loftq::loftq(large_row_major, 2, 4, 1); }),
                  "-inf at (row 1000, col 1023)"));
  EXPECT_TRUE(has(message([] { loftq::loftq(Eigen::MatrixXf(0, 0), 0, 4, 1); }), "W is empty (0 x 0)"));
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, 7, 4, 1); }), "rank = 7 is out of range [0, 6] for a 8 x 6 matrix"));
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, -1, 4, 1); }), "rank = -1"));
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, 2, 3, 1); }), "bits = 3 is not supported (2, 4 or 8)"));
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, 2, 16, 1); }), "bits = 16"));
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, 2, 4, 0); }), "iters = 0 must be >= 1"));
  loftq::Options o;
  o.rank = 2;
  o.block_size = 0;
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, o); }), "block_size = 0"));
  o.block_size = 64;
  o.codebook = static_cast<Codebook>(42);
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, o); }), "codebook = 42"));
  o.codebook = Codebook::nf4;
  o.krylov_depth = 0;
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, o); }), "depth = 0 must be >= 1"));
  o.krylov_depth = 5;
  o.warm_krylov_depth = 0;
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, o); }), "warm_krylov_depth = 0 must be >= 1"));
  o.warm_krylov_depth = 2;
  o.krylov_tolerance = -0.5;
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, o); }), "krylov_tolerance = -0.500000 must be finite and >= 0"));
  o.krylov_tolerance = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, o); }), "krylov_tolerance = nan"));
  o.krylov_tolerance = 5e-4;
  o.oversampling = -3;
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, o); }), "oversampling = -3 must be >= 0"));
  o.oversampling = 4;
  o.threads = -1;
  EXPECT_TRUE(has(message([&] { loftq::loftq(w, o); }), "threads = -1 must be >= 0"));
}

}  // namespace
