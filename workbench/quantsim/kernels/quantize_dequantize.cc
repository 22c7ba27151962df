// The sim's quantize-dequantize in one CPU kernel: y = Δ·clamp(rint(x/Δ), o, o + steps).
//
// The same float32 operations, in the same order, as the four TensorFlow ops it replaces (RealDiv, Rint,
// ClipByValue's Minimum and Maximum, Mul): an IEEE division (no reciprocal), rounding half to even (the
// thread's rounding mode, which TensorFlow leaves at round-to-nearest), a clamp to the integer limits and
// one multiply, so each element is the value the four ops give, in one read and one write of the tensor
// instead of four. Built and loaded on first use by workbench/quantsim/fused.py.
#define EIGEN_USE_THREADS

#include <cmath>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"

using namespace tensorflow;

REGISTER_OP("WorkbenchQuantizeDequantize")
    .Input("x: float")
    .Input("scale: float")
    .Input("q_min: float")
    .Input("q_max: float")
    .Output("y: float")
    .SetShapeFn(shape_inference::UnchangedShape);

namespace {
struct QuantizeDequantize {
  float scale, q_min, q_max;
  // NaN fails both comparisons and stays NaN, as it does through the four ops; ±inf clamps to the limits
  float operator()(float x) const {
    float r = std::nearbyint(x / scale);
    r = r <= q_min ? q_min : (r >= q_max ? q_max : r);
    return r * scale;
  }
  template <typename Packet>
  Packet packetOp(const Packet& x) const {
    using namespace Eigen::internal;
    const Packet s = pset1<Packet>(scale), lo = pset1<Packet>(q_min), hi = pset1<Packet>(q_max);
    Packet r = print(pdiv(x, s));
    r = pselect(pcmp_le(r, lo), lo, pselect(pcmp_le(hi, r), hi, r));
    return pmul(r, s);
  }
};
}  // namespace

namespace Eigen {
namespace internal {
template <>
struct functor_traits<QuantizeDequantize> {
  enum { Cost = 4 * NumTraits<float>::MulCost, PacketAccess = packet_traits<float>::HasDiv };
};
}  // namespace internal
}  // namespace Eigen

class QuantizeDequantizeOp : public OpKernel {
 public:
  explicit QuantizeDequantizeOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    for (int i = 1; i < 4; ++i) {
      OP_REQUIRES(context, TensorShapeUtils::IsScalar(context->input(i).shape()),
                  errors::InvalidArgument("scale, q_min and q_max must be scalars"));
    }
    const Tensor& x = context->input(0);
    const QuantizeDequantize f{context->input(1).scalar<float>()(), context->input(2).scalar<float>()(),
                               context->input(3).scalar<float>()()};
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    y->flat<float>().device(context->eigen_device<Eigen::ThreadPoolDevice>()) = x.flat<float>().unaryExpr(f);
  }
};

REGISTER_KERNEL_BUILDER(Name("WorkbenchQuantizeDequantize").Device(DEVICE_CPU), QuantizeDequantizeOp);
