// nashprune/detail/taylor_score_ops.hpp — the second-order Taylor scores as
// Eigen element functors, for the portable (Eigen) path of importance.hpp.
//
// Not part of the public API. Seed: gqa-aware-prune.md ("Taylor Importance"):
//   Fisher   s = |w·g| + ½(w·g)²        (h = g²)
//   Hessian  s = |w·g| + ½(w²·|h|)      (h given)
// Written as an expression of Eigen operators, w·g appears twice (or w twice),
// and Eigen evaluates each occurrence on its own: twice the loads and pointers.
// Column totals sum a pass of four lines in one loop, so the duplicates pushed
// it past the 16 general registers of x86-64 and it spilled (0.49-0.55 of the
// read bandwidth on a loaded test machine). A functor reads each input once and
// forms each product once (Fisher 0.70-0.77, same load); it does the same
// arithmetic in the same order as the expressions did.
#pragma once

#include <Eigen/Core>

#include "../config.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// (w, g) ↦ |w·g| + ½(w·g)².
template <typename Scalar>
struct taylor_fisher_op {
  Scalar operator()(const Scalar& w, const Scalar& g) const {
    const Scalar wg = w * g;
    return Eigen::numext::abs(wg) + Scalar(0.5) * (wg * wg);
  }
  template <typename Packet>
  Packet packetOp(const Packet& w, const Packet& g) const {
    using namespace Eigen::internal;
    const Packet wg = pmul(w, g);
    return padd(pabs(wg), pmul(pset1<Packet>(Scalar(0.5)), pmul(wg, wg)));
  }
};

/// (w, g, h) ↦ |w·g| + ½(w²·|h|).
template <typename Scalar>
struct taylor_hessian_op {
  Scalar operator()(const Scalar& w, const Scalar& g, const Scalar& h) const {
    return Eigen::numext::abs(w * g) + Scalar(0.5) * ((w * w) * Eigen::numext::abs(h));
  }
  template <typename Packet>
  Packet packetOp(const Packet& w, const Packet& g, const Packet& h) const {
    using namespace Eigen::internal;
    return padd(pabs(pmul(w, g)), pmul(pset1<Packet>(Scalar(0.5)), pmul(pmul(w, w), pabs(h))));
  }
};

/// The Fisher scores of w and g as one lazy array expression.
template <typename DW, typename DG>
auto taylor_fisher_scores(const Eigen::MatrixBase<DW>& w, const Eigen::MatrixBase<DG>& g) {
  return w.array().binaryExpr(g.array(), taylor_fisher_op<typename DW::Scalar>{});
}

/// The Hessian-diagonal scores of w, g and h as one lazy array expression.
template <typename DW, typename DG, typename DH>
auto taylor_hessian_scores(const Eigen::MatrixBase<DW>& w, const Eigen::MatrixBase<DG>& g,
                           const Eigen::MatrixBase<DH>& h) {
  using W = decltype(w.array());
  using G = decltype(g.array());
  using H = decltype(h.array());
  return Eigen::CwiseTernaryOp<taylor_hessian_op<typename DW::Scalar>, const W, const G, const H>(
      w.array(), g.array(), h.array());
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE

namespace Eigen::internal {
template <typename Scalar>
struct functor_traits<nashprune::detail::taylor_fisher_op<Scalar>> {
  enum {
    Cost = 3 * NumTraits<Scalar>::MulCost + 2 * NumTraits<Scalar>::AddCost,
    PacketAccess = packet_traits<Scalar>::HasMul && packet_traits<Scalar>::HasAdd && packet_traits<Scalar>::HasAbs
  };
};

template <typename Scalar>
struct functor_traits<nashprune::detail::taylor_hessian_op<Scalar>> {
  enum {
    Cost = 4 * NumTraits<Scalar>::MulCost + 3 * NumTraits<Scalar>::AddCost,
    PacketAccess = packet_traits<Scalar>::HasMul && packet_traits<Scalar>::HasAdd && packet_traits<Scalar>::HasAbs
  };
};
}  // namespace Eigen::internal
