// truncated_svd: factor form, agreement with a double-precision SVD, ranks 0 and min(rows, cols).
#include <gtest/gtest.h>

#include <Eigen/SVD>

#include "test_helpers.hpp"

namespace {

TEST(TruncatedSvd, FactorsAreUSqrtSAndVSqrtS) {
  const Eigen::MatrixXf e = loftq_test::gaussian(60, 45, 1.0f, 21);
  const auto f = loftq::truncated_svd(e, 8);
  ASSERT_EQ(f.A.rows(), 60);
  ASSERT_EQ(f.A.cols(), 8);
  ASSERT_EQ(f.B.rows(), 45);
  ASSERT_EQ(f.B.cols(), 8);
  const Eigen::MatrixXf s = f.singular_values.asDiagonal();
  EXPECT_TRUE((f.A.transpose() * f.A).isApprox(s, 1e-4f));
  EXPECT_TRUE((f.B.transpose() * f.B).isApprox(s, 1e-4f));
  for (Eigen::Index k = 1; k < 8; ++k) EXPECT_GE(f.singular_values(k - 1), f.singular_values(k));
}

TEST(TruncatedSvd, MatchesADoublePrecisionSvdOnTallAndWideMatrices) {
  for (auto [rows, cols] : {std::pair{70, 40}, std::pair{40, 70}}) {
    const Eigen::MatrixXf e = loftq_test::gaussian(rows, cols, 0.02f, 22);
    const Eigen::JacobiSVD<Eigen::MatrixXd> svd(e.cast<double>(), Eigen::ComputeThinU | Eigen::ComputeThinV);
    const int r = 10;
    const Eigen::MatrixXd best = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal() *
                                 svd.matrixV().leftCols(r).transpose();
    const auto f = loftq::truncated_svd(e, r);
    const Eigen::MatrixXd ours = (f.A * f.B.transpose()).cast<double>();
    EXPECT_LT((ours - best).norm() / best.norm(), 1e-5) << rows << " x " << cols;
    EXPECT_TRUE(f.singular_values.cast<double>().isApprox(svd.singularValues().head(r), 1e-5));
  }
}

TEST(TruncatedSvd, RecoversAnExactLowRankMatrix) {
  const Eigen::MatrixXf u = loftq_test::gaussian(50, 3, 1.0f, 23);
  const Eigen::MatrixXf v = loftq_test::gaussian(30, 3, 1.0f, 24);
  const Eigen::MatrixXf e = u * v.transpose();
  const auto f = loftq::truncated_svd(e, 3);
  EXPECT_LT((f.A * f.B.transpose() - e).norm() / e.norm(), 1e-5f);
}

TEST(TruncatedSvd, FullRankReconstructsAndRankZeroIsEmpty) {
  const Eigen::MatrixXf e = loftq_test::gaussian(12, 9, 1.0f, 25);
  const auto full = loftq::truncated_svd(e, 9);
  EXPECT_LT((full.A * full.B.transpose() - e).norm() / e.norm(), 1e-5f);
  const auto none = loftq::truncated_svd(e, 0);
  EXPECT_EQ(none.A.rows(), 12);
  EXPECT_EQ(none.A.cols(), 0);
  EXPECT_EQ(none.B.rows(), 9);
  EXPECT_EQ(none.B.cols(), 0);
  EXPECT_EQ(none.singular_values.size(), 0);
}

TEST(TruncatedSvd, RowMajorInputGivesTheSameFactors) {
  const Eigen::MatrixXf e = loftq_test::gaussian(20, 17, 1.0f, 26);
  const loftq::RowMatrixXf row = e;
  const auto a = loftq::truncated_svd(e, 4);
  const auto b = loftq::truncated_svd(row, 4);
  EXPECT_EQ(a.A, b.A);
  EXPECT_EQ(a.B, b.B);
}

TEST(TruncatedSvd, BadRankOrEmptyInputThrows) {
  using loftq_test::invalid_argument_message;
  const Eigen::MatrixXf e = Eigen::MatrixXf::Ones(5, 3);
  EXPECT_NE(invalid_argument_message([&] { loftq::truncated_svd(e, 4); }).find("rank = 4 is out of range [0, 3]"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([&] { loftq::truncated_svd(e, -1); }).find("rank = -1"), std::string::npos);
  EXPECT_NE(invalid_argument_message([] { loftq::truncated_svd(Eigen::MatrixXf(3, 0), 0); }).find("E is empty"),
            std::string::npos);
}

}  // namespace
