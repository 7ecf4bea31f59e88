// truncated_svd: factor form, the exact path against a double-precision SVD, the randomized
// paths against the exact one, warm starts, seeds and threads, ranks 0 and min(rows, cols); the
// largest eigenpairs of Rayleigh-Ritz against Eigen's full symmetric eigensolver; the Gram matrix
// the orthonormalization against a basis and its one-step conditioning.
#include <gtest/gtest.h>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "test_helpers.hpp"

namespace {

using loftq::SvdMethod;
using loftq_test::invalid_argument_message;

constexpr SvdMethod all_methods[] = {SvdMethod::exact, SvdMethod::block_krylov, SvdMethod::subspace_iteration};

/// ||E - A B^T||_F in double.
double residual_norm(const Eigen::MatrixXf& e, const loftq::LowRankFactors& f) {
  return (e.cast<double>() - (f.A * f.B.transpose()).cast<double>()).norm();
}

TEST(TruncatedSvd, FactorsAreUSqrtSAndVSqrtSForEveryMethod) {
  // 200 x 150 with rank 8: the randomized sketches (12 columns, 60 for block Krylov) are
  // narrower than 150, so the randomized paths run.
  const Eigen::MatrixXf e = loftq_test::gaussian(200, 150, 1.0f, 21);
  for (SvdMethod method : all_methods) {
    const auto f = loftq::truncated_svd(e, 8, method);
    ASSERT_EQ(f.A.rows(), 200);
    ASSERT_EQ(f.A.cols(), 8);
    ASSERT_EQ(f.B.rows(), 150);
    ASSERT_EQ(f.B.cols(), 8);
    const Eigen::MatrixXf s = f.singular_values.asDiagonal();
    EXPECT_TRUE((f.A.transpose() * f.A).isApprox(s, 1e-4f)) << static_cast<int>(method);
    EXPECT_TRUE((f.B.transpose() * f.B).isApprox(s, 1e-4f)) << static_cast<int>(method);
    for (Eigen::Index k = 1; k < 8; ++k) EXPECT_GE(f.singular_values(k - 1), f.singular_values(k));
    // ||E - A B^T||^2 = ||E||^2 - sum S^2, which loftq() uses for its errors.
    const double identity = std::sqrt(e.cast<double>().squaredNorm() - f.singular_values.cast<double>().squaredNorm());
    EXPECT_NEAR(residual_norm(e, f) / identity, 1.0, 1e-5) << static_cast<int>(method);
  }
}

TEST(TruncatedSvd, Bfloat16PassesGiveTheFactorsOfEVVtAndTheFloatPassesError) {
  // A flat spectrum, as loftq()'s residuals have: the basis built from E rounded to bfloat16
  // captures nearly what the float basis does, and the factors are those of E V V^T exactly.
  const Eigen::MatrixXf e = loftq_test::gaussian(300, 200, 0.02f, 23);
  for (SvdMethod method : {SvdMethod::block_krylov, SvdMethod::subspace_iteration}) {
    loftq::SvdOptions options;
    options.method = method;
    const auto in_float = loftq::truncated_svd(e, 8, options);
    options.bfloat16_passes = true;
    const auto f = loftq::truncated_svd(e, 8, options);
    const Eigen::MatrixXf s = f.singular_values.asDiagonal();
    EXPECT_TRUE((f.A.transpose() * f.A).isApprox(s, 1e-4f)) << static_cast<int>(method);
    EXPECT_TRUE((f.B.transpose() * f.B).isApprox(s, 1e-4f)) << static_cast<int>(method);
    for (Eigen::Index k = 1; k < 8; ++k) EXPECT_GE(f.singular_values(k - 1), f.singular_values(k));
    const double identity =
        std::sqrt(e.cast<double>().squaredNorm() - f.singular_values.cast<double>().squaredNorm());
    EXPECT_NEAR(residual_norm(e, f) / identity, 1.0, 1e-5) << static_cast<int>(method);
    EXPECT_NEAR(residual_norm(e, f) / residual_norm(e, in_float), 1.0, 1e-3)
        << static_cast<int>(method);
    EXPECT_NE(residual_norm(e, f), residual_norm(e, in_float));  // the option is not ignored
  }
}

TEST(TruncatedSvd, ExactMatchesADoublePrecisionSvdOnTallAndWideMatrices) {
  for (auto [rows, cols] : {std::pair{70, 40}, std::pair{40, 70}}) {
    const Eigen::MatrixXf e = loftq_test::gaussian(rows, cols, 0.02f, 22);
    const Eigen::JacobiSVD<Eigen::MatrixXd> svd(e.cast<double>(), Eigen::ComputeThinU | Eigen::ComputeThinV);
    const int r = 10;
    const Eigen::MatrixXd best = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal() *
                                 svd.matrixV().leftCols(r).transpose();
    const auto f = loftq::truncated_svd(e, r, SvdMethod::exact);
    const Eigen::MatrixXd ours = (f.A * f.B.transpose()).cast<double>();
    EXPECT_LT((ours - best).norm() / best.norm(), 1e-5) << rows << " x " << cols;
    EXPECT_TRUE(f.singular_values.cast<double>().isApprox(svd.singularValues().head(r), 1e-5));
  }
}

TEST(TruncatedSvd, RandomizedMethodsNearlyMatchExactOnAFlatSpectrum) {
  // A Gaussian matrix has the flattest spectrum there is: the hardest case for sketches.
  for (auto [rows, cols] : {std::pair{400, 300}, std::pair{300, 400}}) {
    const Eigen::MatrixXf e = loftq_test::gaussian(rows, cols, 0.02f, 27);
    const double exact = residual_norm(e, loftq::truncated_svd(e, 16, SvdMethod::exact));
    const double krylov = residual_norm(e, loftq::truncated_svd(e, 16, SvdMethod::block_krylov));
    const double subspace = residual_norm(e, loftq::truncated_svd(e, 16, SvdMethod::subspace_iteration));
    EXPECT_GE(krylov, exact * (1.0 - 1e-6));
    EXPECT_LT(krylov, exact * 1.005) << rows << " x " << cols;
    EXPECT_LT(subspace, exact * 1.05) << rows << " x " << cols;
    EXPECT_LT(krylov, subspace);
  }
}

TEST(TruncatedSvd, RandomizedMethodsMatchExactWhenTheSpectrumHasAGap) {
  const Eigen::MatrixXf u = loftq_test::gaussian(300, 6, 1.0f, 28);
  const Eigen::MatrixXf v = loftq_test::gaussian(250, 6, 1.0f, 29);
  const Eigen::MatrixXf e = u * v.transpose() + loftq_test::gaussian(300, 250, 0.01f, 30);
  const auto exact = loftq::truncated_svd(e, 6, SvdMethod::exact);
  for (SvdMethod method : {SvdMethod::block_krylov, SvdMethod::subspace_iteration}) {
    const auto f = loftq::truncated_svd(e, 6, method);
    EXPECT_TRUE(f.singular_values.isApprox(exact.singular_values, 1e-5f)) << static_cast<int>(method);
    EXPECT_LT(((f.A * f.B.transpose()) - exact.A * exact.B.transpose()).norm() / e.norm(), 1e-4);
  }
}

TEST(TruncatedSvd, EveryMethodRecoversAnExactLowRankMatrix) {
  const Eigen::MatrixXf u = loftq_test::gaussian(200, 3, 1.0f, 23);
  const Eigen::MatrixXf v = loftq_test::gaussian(150, 3, 1.0f, 24);
  const Eigen::MatrixXf e = u * v.transpose();
  for (SvdMethod method : all_methods) {
    const auto f = loftq::truncated_svd(e, 3, method);
    EXPECT_LT((f.A * f.B.transpose() - e).norm() / e.norm(), 1e-5f) << static_cast<int>(method);
  }
}

TEST(TruncatedSvd, FullRankReconstructsAndRankZeroIsEmpty) {
  const Eigen::MatrixXf e = loftq_test::gaussian(12, 9, 1.0f, 25);
  for (SvdMethod method : all_methods) {
    const auto full = loftq::truncated_svd(e, 9, method);
    EXPECT_LT((full.A * full.B.transpose() - e).norm() / e.norm(), 1e-5f);
    const auto none = loftq::truncated_svd(e, 0, method);
    EXPECT_EQ(none.A.rows(), 12);
    EXPECT_EQ(none.A.cols(), 0);
    EXPECT_EQ(none.B.rows(), 9);
    EXPECT_EQ(none.B.cols(), 0);
    EXPECT_EQ(none.singular_values.size(), 0);
  }
}

TEST(TruncatedSvd, ASketchAsWideAsTheMatrixComputesTheExactSvd) {
  const Eigen::MatrixXf e = loftq_test::gaussian(80, 50, 1.0f, 31);
  const auto exact = loftq::truncated_svd(e, 10, SvdMethod::exact);
  loftq::SvdOptions wide;  // (10 + 4) * 5 = 70 >= 50 columns
  const auto krylov = loftq::truncated_svd(e, 10, wide);
  EXPECT_EQ(krylov.A, exact.A);
  EXPECT_EQ(krylov.B, exact.B);
}

TEST(TruncatedSvd, RandomizedResultsDependOnTheSeedOnly) {
  const Eigen::MatrixXf e = loftq_test::gaussian(300, 200, 1.0f, 32);
  for (SvdMethod method : {SvdMethod::block_krylov, SvdMethod::subspace_iteration}) {
    loftq::SvdOptions options;
    options.method = method;
    options.seed = 7;
    loftq::set_threads(1);
    const auto one = loftq::truncated_svd(e, 8, options);
    loftq::set_threads(2);
    const auto two = loftq::truncated_svd(e, 8, options);
    loftq::set_threads(0);
    const auto again = loftq::truncated_svd(e, 8, options);
    EXPECT_EQ(one.A, two.A);
    EXPECT_EQ(one.B, two.B);
    EXPECT_EQ(one.A, again.A);
    options.seed = 8;
    const auto other = loftq::truncated_svd(e, 8, options);
    EXPECT_NE(one.A, other.A);
  }
}

TEST(TruncatedSvd, AWarmStartFromTheRightSubspaceIsExactInOnePass) {
  const Eigen::MatrixXf e = loftq_test::gaussian(300, 200, 1.0f, 33);
  const auto exact = loftq::truncated_svd(e, 8, SvdMethod::exact);
  loftq::SvdOptions options;
  options.depth = 1;  // one pass over E: the sketch is the start itself
  options.oversampling = 0;
  const auto warm = loftq::truncated_svd(e, 8, options, exact.B);
  EXPECT_TRUE(warm.singular_values.isApprox(exact.singular_values, 1e-5f));
  EXPECT_LT((warm.A * warm.B.transpose() - exact.A * exact.B.transpose()).norm() / e.norm(), 1e-5);
  const auto cold = loftq::truncated_svd(e, 8, options);
  EXPECT_GT(residual_norm(e, cold), residual_norm(e, warm) * 1.01);
}

TEST(TruncatedSvd, ATolerancePicksTheDepthTheSpectrumNeedsAndStopsThere) {
  // A gap after the rank converges in a few blocks; a flat spectrum takes the most. Either
  // way the result is, bit for bit, the fixed-depth result of the depth it picked, for every
  // thread count.
  const Eigen::MatrixXf noise = loftq_test::gaussian(400, 300, 1e-3f, 35);
  const Eigen::MatrixXf gapped = loftq_test::gaussian(400, 8, 1.0f, 36) * loftq_test::gaussian(8, 300, 1.0f, 37) + noise;
  const Eigen::MatrixXf flat = loftq_test::gaussian(400, 300, 1.0f, 38);
  loftq::SvdOptions options;
  options.depth = 5;
  options.tolerance = 5e-4;
  options.seed = 3;
  const auto gapped_adaptive = loftq::truncated_svd(gapped, 8, options);
  const auto flat_adaptive = loftq::truncated_svd(flat, 8, options);
  EXPECT_LE(gapped_adaptive.krylov_depth, 3);
  EXPECT_EQ(flat_adaptive.krylov_depth, 5);
  for (const auto* m : {&gapped, &flat}) {
    const auto adaptive = loftq::truncated_svd(*m, 8, options);
    loftq::SvdOptions fixed = options;
    fixed.tolerance = 0.0;
    fixed.depth = adaptive.krylov_depth;
    const auto same = loftq::truncated_svd(*m, 8, fixed);
    EXPECT_EQ(same.krylov_depth, adaptive.krylov_depth);
    EXPECT_EQ(same.A, adaptive.A);
    EXPECT_EQ(same.B, adaptive.B);
    loftq::set_threads(1);
    const auto one_thread = loftq::truncated_svd(*m, 8, options);
    loftq::set_threads(0);
    EXPECT_EQ(one_thread.A, adaptive.A);
  }
  EXPECT_EQ(loftq::truncated_svd(flat, 8, SvdMethod::exact).krylov_depth, 0);
  EXPECT_EQ(loftq::truncated_svd(flat, 8, SvdMethod::subspace_iteration).krylov_depth, 0);
}

TEST(TruncatedSvd, KrylovStopsWhenTheExtrapolatedGainIsWithinTheTolerance) {
  using loftq::detail::converged;
  // Gains 1, 0.1, 0.01: rho = 0.1, what is left to gain 0.01 * 0.1 / 0.9 = 1.1e-3.
  EXPECT_TRUE(converged({1.0, 0.1, 0.01}, 1.11, 10.0, 1.2e-4));
  EXPECT_FALSE(converged({1.0, 0.1, 0.01}, 1.11, 10.0, 1.0e-4));
  // The larger of the last two ratios counts: 0.5 after 0.1 extrapolates 0.05 * 0.5 / 0.5.
  EXPECT_FALSE(converged({1.0, 0.1, 0.05}, 1.15, 10.0, 4e-3));
  EXPECT_TRUE(converged({1.0, 0.1, 0.05}, 1.15, 10.0, 6e-3));
  // A growing gain, or a single block, never stops; no gain at all, or one within float rounding
  // of the captured energy (1e-5 of it), always does.
  EXPECT_FALSE(converged({0.1, 0.5}, 0.6, 10.0, 1.0));
  EXPECT_FALSE(converged({0.1}, 0.1, 10.0, 1.0));
  EXPECT_TRUE(converged({0.1, 0.0}, 0.1, 0.0, 0.0));
  EXPECT_TRUE(converged({1e6, 9.0}, 1e6, 1.0, 0.0));
  EXPECT_FALSE(converged({1e6, 11.0}, 1e6, 1.0, 0.0));
}

TEST(TruncatedSvd, AZeroMatrixGivesZeroFactorsWithoutNaN) {
  const Eigen::MatrixXf e = Eigen::MatrixXf::Zero(150, 120);
  for (SvdMethod method : all_methods) {
    const auto f = loftq::truncated_svd(e, 5, method);
    EXPECT_TRUE(f.A.allFinite());
    EXPECT_TRUE(f.B.allFinite());
    EXPECT_TRUE((f.A * f.B.transpose()).isZero(0.0f)) << static_cast<int>(method);
  }
}

TEST(TruncatedSvd, RowMajorInputGivesTheSameFactors) {
  const Eigen::MatrixXf e = loftq_test::gaussian(120, 90, 1.0f, 26);
  const loftq::RowMatrixXf row = e;
  for (SvdMethod method : all_methods) {
    const auto a = loftq::truncated_svd(e, 4, method);
    const auto b = loftq::truncated_svd(row, 4, method);
    EXPECT_EQ(a.A, b.A);
    EXPECT_EQ(a.B, b.B);
  }
}

TEST(TruncatedSvd, BadArgumentsThrowNamingThem) {
  const Eigen::MatrixXf e = Eigen::MatrixXf::Ones(5, 3);
  auto message = [](auto&& call) { return invalid_argument_message(call); };
  EXPECT_NE(message([&] { loftq::truncated_svd(e, 4); }).find("rank = 4 is out of range [0, 3]"), std::string::npos);
  EXPECT_NE(message([&] { loftq::truncated_svd(e, -1); }).find("rank = -1"), std::string::npos);
  EXPECT_NE(message([] { loftq::truncated_svd(Eigen::MatrixXf(3, 0), 0); }).find("E is empty"), std::string::npos);
  Eigen::MatrixXf bad = e;
  bad(4, 2) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(message([&] { loftq::truncated_svd(bad, 1); }).find("E has a non-finite value nan at (row 4, col 2)"),
            std::string::npos);
  loftq::SvdOptions options;
  options.oversampling = -1;
  EXPECT_NE(message([&] { loftq::truncated_svd(e, 1, options); }).find("oversampling = -1 must be >= 0"),
            std::string::npos);
  options = {};
  options.depth = 0;
  EXPECT_NE(message([&] { loftq::truncated_svd(e, 1, options); }).find("depth = 0 must be >= 1"), std::string::npos);
  options = {};
  options.tolerance = -1.0;
  EXPECT_NE(message([&] { loftq::truncated_svd(e, 1, options); }).find("tolerance = -1.000000 must be finite and >= 0"),
            std::string::npos);
  options = {};
  options.power_iters = 0;
  EXPECT_NE(message([&] { loftq::truncated_svd(e, 1, options); }).find("power_iters = 0 must be >= 1"),
            std::string::npos);
  options = {};
  options.method = static_cast<SvdMethod>(9);
  EXPECT_NE(message([&] { loftq::truncated_svd(e, 1, options); }).find("svd method = 9"), std::string::npos);
  EXPECT_NE(message([&] { loftq::truncated_svd(e, 1, loftq::SvdOptions{}, Eigen::MatrixXf::Ones(4, 2)); })
                .find("start is 4 x 2, needs E.cols() = 3 rows"),
            std::string::npos);
}

/// Checks pairs against Eigen's full solver on G: the k largest eigenvalues, non-increasing, to
/// 1e-13 of ||G||_2, and orthonormal vectors with ||G v - lambda v|| within 1e-13 of ||G||_2.
void expect_largest_eigenpairs(const Eigen::MatrixXd& g, Eigen::Index k) {
  SCOPED_TRACE("n = " + std::to_string(g.rows()) + ", k = " + std::to_string(k));
  const loftq::detail::LargestEigenpairs pairs = loftq::detail::largest_eigenpairs(g, k);
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> reference(g);
  const double scale =
      std::max(reference.eigenvalues().cwiseAbs().maxCoeff(), std::numeric_limits<double>::min());
  ASSERT_EQ(pairs.values.size(), k);
  ASSERT_EQ(pairs.vectors.rows(), g.rows());
  ASSERT_EQ(pairs.vectors.cols(), k);
  for (Eigen::Index j = 0; j < k; ++j) {
    EXPECT_NEAR(pairs.values(j), reference.eigenvalues()(g.rows() - 1 - j), 1e-13 * scale) << j;
    if (j > 0) {
      EXPECT_GE(pairs.values(j - 1), pairs.values(j));
    }
  }
  const auto n = static_cast<double>(g.rows());
  EXPECT_LT((pairs.vectors.transpose() * pairs.vectors - Eigen::MatrixXd::Identity(k, k)).norm(),
            1e-13 * n);
  EXPECT_LT((g * pairs.vectors - pairs.vectors * pairs.values.asDiagonal()).stableNorm(),
            1e-13 * scale * n);
}

TEST(LargestEigenpairs, MatchEigensFullSolverOnGramMatrices) {
  for (Eigen::Index n : {1, 2, 3, 17, 68, 204}) {
    const Eigen::MatrixXd x =
        loftq_test::gaussian(2 * n + 5, n, 1.0f, static_cast<unsigned>(n)).cast<double>();
    const Eigen::MatrixXd g = x.transpose() * x;
    for (Eigen::Index k : {Eigen::Index{0}, Eigen::Index{1}, (n + 2) / 3, n}) {
      expect_largest_eigenpairs(g, k);
    }
  }
}

TEST(LargestEigenpairs, RepeatedZeroAndNegativeEigenvaluesGiveOrthonormalVectors) {
  const Eigen::Index n = 40;
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(
      loftq_test::gaussian(n, n, 1.0f, 3).cast<double>());
  const Eigen::MatrixXd q = qr.householderQ();
  Eigen::VectorXd spectrum(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    spectrum(i) = i < 10 ? 3.0 : i < 20 ? 2.0 : i < 30 ? 0.0 : -1.0 - static_cast<double>(i);
  }
  expect_largest_eigenpairs(q * spectrum.asDiagonal() * q.transpose(), 15);  // a cluster split at k
  expect_largest_eigenpairs(Eigen::MatrixXd::Identity(n, n), 7);  // one eigenvalue n times
  expect_largest_eigenpairs(Eigen::MatrixXd::Zero(n, n), 5);
  expect_largest_eigenpairs(Eigen::MatrixXd(spectrum.asDiagonal()), 12);  // already diagonal
}

TEST(LargestEigenpairs, ScaleOfTheMatrixDoesNotMatter) {
  const Eigen::MatrixXd x = loftq_test::gaussian(30, 20, 1.0f, 9).cast<double>();
  const Eigen::MatrixXd g = x.transpose() * x;
  for (double scale : {1e-200, 1e200}) expect_largest_eigenpairs(g * scale, 6);
}

TEST(LargestEigenpairs, ReusedRotationsGiveTheSameBits) {
  // One buffer of rotations through a large, a small and a large matrix again, as the solver's
  // workspace keeps it: each result equals that of a fresh buffer, bit for bit.
  std::vector<loftq::detail::PlaneRotation> rotations;
  for (Eigen::Index n : {60, 17, 60}) {
    const Eigen::MatrixXf x = loftq_test::gaussian(2 * n, n, 1.0f, static_cast<unsigned>(n));
    const Eigen::MatrixXd g = (x.transpose() * x).cast<double>();
    const loftq::detail::LargestEigenpairs fresh = loftq::detail::largest_eigenpairs(g, 9);
    const loftq::detail::LargestEigenpairs reused =
        loftq::detail::largest_eigenpairs(g, 9, rotations);
    EXPECT_EQ(reused.values, fresh.values) << n;
    EXPECT_EQ(reused.vectors, fresh.vectors) << n;
    EXPECT_GE(rotations.size(), static_cast<std::size_t>(n)) << n;  // they were recorded here
  }
}

/// The largest and smallest singular values of X, in double.
std::pair<double, double> singular_range(const Eigen::MatrixXf& x) {
  const Eigen::JacobiSVD<Eigen::MatrixXd> svd(x.cast<double>());
  return {svd.singularValues().maxCoeff(), svd.singularValues().minCoeff()};
}

/// ||(I - Q Q^T) Y|| / ||Y|| for Q an orthonormal basis of X's span: how far Y leaves that span.
double outside_span(const Eigen::MatrixXf& x, const Eigen::MatrixXf& y) {
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(x.cast<double>());
  const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(x.rows(), x.cols());
  const Eigen::MatrixXd yd = y.cast<double>();
  return (yd - q * (q.transpose() * yd)).norm() / yd.norm();
}

TEST(Orthonormalization, TheCholeskyGramIsTheLowerTriangleOfXtXInDouble) {
  const Eigen::MatrixXf x = loftq_test::gaussian(700, 23, 1.0f, 5);  // several row pieces
  const Eigen::MatrixXd gram = loftq::detail::gram_in_double(x);
  const Eigen::MatrixXd exact = x.cast<double>().transpose() * x.cast<double>();
  EXPECT_LT((Eigen::MatrixXd(gram.triangularView<Eigen::Lower>()) -
             Eigen::MatrixXd(exact.triangularView<Eigen::Lower>())).norm(),
            1e-12 * exact.norm());
  EXPECT_EQ(Eigen::MatrixXd(gram.triangularView<Eigen::StrictlyUpper>()).norm(), 0.0);
}

TEST(Orthonormalization, ConditioningABasisKeepsItsSpan) {
  // Columns scaled over three orders of magnitude: one CholeskyQR step conditions them.
  Eigen::MatrixXf y = loftq_test::gaussian(500, 12, 1.0f, 6);
  for (Eigen::Index j = 0; j < y.cols(); ++j) y.col(j) *= std::pow(10.0f, -0.3f * static_cast<float>(j));
  const Eigen::MatrixXf original = y;
  const auto before = singular_range(y);
  ASSERT_GT(before.first / before.second, 1e3);
  loftq::detail::condition_basis(y);
  const auto after = singular_range(y);
  EXPECT_LT(after.first / after.second, 1.001);
  EXPECT_NEAR(after.first, 1.0, 1e-3);
  EXPECT_LT(outside_span(y, original), 1e-5);
  // Two equal columns: CholeskyQR is unsafe, and the full orthonormalization gives orthonormal
  // columns whose span holds Y's.
  Eigen::MatrixXf deficient = original;
  deficient.col(5) = deficient.col(2);
  Eigen::MatrixXf conditioned = deficient;
  loftq::detail::condition_basis(conditioned);
  const Eigen::MatrixXd gram = conditioned.cast<double>().transpose() * conditioned.cast<double>();
  EXPECT_LT((gram - Eigen::MatrixXd::Identity(12, 12)).norm(), 1e-5);
  EXPECT_LT(outside_span(conditioned, deficient), 1e-5);
}

/// An orthonormal rows x cols float basis from a Gaussian matrix (Householder QR in double).
Eigen::MatrixXf orthonormal_basis(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(
      loftq_test::gaussian(rows, cols, 1.0f, seed).cast<double>());
  return (qr.householderQ() * Eigen::MatrixXd::Identity(rows, cols)).cast<float>();
}

/// Largest |P^T Q| and largest |Q^T Q - I|, in double.
std::pair<double, double> losses(const Eigen::MatrixXf& p, const Eigen::MatrixXf& q) {
  const Eigen::MatrixXd qd = q.cast<double>();
  const Eigen::MatrixXd self = qd.transpose() * qd - Eigen::MatrixXd::Identity(q.cols(), q.cols());
  return {(p.cast<double>().transpose() * qd).cwiseAbs().maxCoeff(), self.cwiseAbs().maxCoeff()};
}

TEST(Orthonormalization, AWellConditionedBlockIsToldByItsGramMatrix) {
  // Singular values spread from 1 to 1 / condition: the block is well conditioned for a limit
  // at or above its condition number only; a rank-deficient or empty block never is.
  const Eigen::MatrixXf turn = orthonormal_basis(9, 9, 12);
  for (const double condition : {1.0, 3.0, 3.9, 4.1, 10.0}) {
    Eigen::VectorXd spread(9);
    for (Eigen::Index j = 0; j < 9; ++j)
      spread(j) = std::pow(condition, -static_cast<double>(j) / 8.0);
    const Eigen::MatrixXd y = orthonormal_basis(200, 9, 13).cast<double>() * spread.asDiagonal() *
                              turn.cast<double>().transpose();
    const Eigen::MatrixXd gram = y.transpose() * y;
    EXPECT_EQ(loftq::detail::well_conditioned(gram, 4.0), condition <= 4.0) << condition;
  }
  EXPECT_FALSE(loftq::detail::well_conditioned(Eigen::MatrixXd::Zero(3, 3), 4.0));
  EXPECT_FALSE(loftq::detail::well_conditioned(
      Eigen::MatrixXd::Identity(3, 3) - Eigen::MatrixXd::Constant(3, 3, 1.0 / 3.0), 4.0));
  EXPECT_FALSE(loftq::detail::well_conditioned(Eigen::MatrixXd(0, 0), 4.0));
}

TEST(Orthonormalization, AgainstABasisOnceOrTwiceAsTheLossRequires) {
  // 700 rows: several row pieces. A block with much of its norm outside P's span takes one
  // Gram-Schmidt pass; one that lies within 1e-4 of the span takes two (one alone left |P^T Q|
  // at 2.7e-4 here). Either way Q is orthonormal, orthogonal to P, and [P, Q] spans Y.
  const Eigen::MatrixXf p = orthonormal_basis(700, 40, 7);
  const Eigen::MatrixXf mix = loftq_test::gaussian(40, 12, 1.0f, 8);
  for (const float outside : {1.0f, 1e-4f}) {
    const Eigen::MatrixXf y = p * mix + outside * loftq_test::gaussian(700, 12, 1.0f, 9);
    Eigen::MatrixXf q = y;
    loftq::detail::orthonormalize<float>(p, q);
    const auto [cross, self] = losses(p, q);
    EXPECT_LT(cross, 1e-6) << outside;
    EXPECT_LT(self, 1e-6) << outside;
    Eigen::MatrixXf joined(700, 52);
    joined << p, q;
    EXPECT_LT(outside_span(joined, y), 1e-6) << outside;
  }
}

TEST(Orthonormalization, OneCholeskyQRStepOrTwoAsTheLossRequires) {
  // A block with condition number 10 takes one CholeskyQR step, one with 1e4 takes two (one alone
  // left |Q^T Q - I| at 4.8e-5 here, forced). Either way Q is orthonormal and spans Y.
  const Eigen::MatrixXf basis = orthonormal_basis(700, 12, 10);
  const Eigen::MatrixXf turn = orthonormal_basis(12, 12, 11);
  for (const double condition : {10.0, 1e4}) {
    Eigen::VectorXf spread(12);
    for (Eigen::Index j = 0; j < 12; ++j)
      spread(j) = static_cast<float>(std::pow(condition, -static_cast<double>(j) / 11.0));
    const Eigen::MatrixXf y = basis * spread.asDiagonal() * turn.transpose();
    Eigen::MatrixXf q = y;
    loftq::detail::orthonormalize<float>(Eigen::MatrixXf(), q);
    EXPECT_LT(losses(Eigen::MatrixXf::Zero(700, 1), q).second, 1e-6) << condition;
    EXPECT_LT(outside_span(q, y), 1e-5) << condition;
  }
}

}  // namespace
