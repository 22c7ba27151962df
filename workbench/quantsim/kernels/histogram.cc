// tf_enhanced's statistics of one batch in two passes over the tensor instead of about ten TensorFlow ops.
//
//   WorkbenchFiniteRange(rows (C, N)) -> lo, hi (C,): per row the min and max of the finite values (+inf and
//     -inf for a row without any), as reduce_min/reduce_max over the values with NaN and ±inf masked out.
//   WorkbenchBinCounts(rows (C, N), lo, hi (C,), num_bins) -> counts (C, num_bins) float64: per value the bin
//     floor(((x - lo)·bins) / (hi - lo)), each operation in float32 in that order, clipped to the end bins
//     (±inf land there); NaN is dropped. The counts are exact integers (int64 per shard, then summed).
//
// Built and loaded on first use by workbench/quantsim/fused.py, beside the quantizer's kernel.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

using namespace tensorflow;

REGISTER_OP("WorkbenchFiniteRange")
    .Input("rows: float")
    .Output("lo: float")
    .Output("hi: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &rows));
      c->set_output(0, c->Vector(c->Dim(rows, 0)));
      c->set_output(1, c->Vector(c->Dim(rows, 0)));
      return absl::OkStatus();
    });

REGISTER_OP("WorkbenchBinCounts")
    .Input("rows: float")
    .Input("lo: float")
    .Input("hi: float")
    .Attr("num_bins: int >= 1")
    .Output("counts: double")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &rows));
      int num_bins;
      TF_RETURN_IF_ERROR(c->GetAttr("num_bins", &num_bins));
      c->set_output(0, c->Matrix(c->Dim(rows, 0), num_bins));
      return absl::OkStatus();
    });

namespace {
constexpr int64_t kShard = 1 << 16;  // elements per unit of work

// Runs fn(row, begin, end) over every row's elements in shards of kShard, on TensorFlow's CPU threads.
template <typename Fn>
void ForEachShard(OpKernelContext* context, int64_t rows, int64_t n, Fn fn) {
  const int64_t per_row = std::max<int64_t>(1, (n + kShard - 1) / kShard);
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  Shard(workers->num_threads, workers->workers, rows * per_row, kShard * 4, [&](int64_t first, int64_t last) {
    for (int64_t unit = first; unit < last; ++unit) {
      const int64_t row = unit / per_row, begin = (unit % per_row) * kShard;
      fn(row, begin, std::min(n, begin + kShard));
    }
  });
}
}  // namespace

class FiniteRangeOp : public OpKernel {
 public:
  explicit FiniteRangeOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    OP_REQUIRES(context, input.dims() == 2, errors::InvalidArgument("rows must be (channels, values)"));
    const int64_t rows = input.dim_size(0), n = input.dim_size(1);
    Tensor *lo = nullptr, *hi = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({rows}), &lo));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({rows}), &hi));
    auto x = input.matrix<float>();
    auto out_lo = lo->vec<float>();
    auto out_hi = hi->vec<float>();
    for (int64_t r = 0; r < rows; ++r) {
      out_lo(r) = std::numeric_limits<float>::infinity();
      out_hi(r) = -std::numeric_limits<float>::infinity();
    }
    std::mutex mu;
    ForEachShard(context, rows, n, [&](int64_t r, int64_t begin, int64_t end) {
      float a = std::numeric_limits<float>::infinity(), b = -a;
      const float* v = &x(r, 0);
      for (int64_t i = begin; i < end; ++i) {
        const float value = v[i];
        if (std::isfinite(value)) {
          a = value < a ? value : a;
          b = value > b ? value : b;
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      out_lo(r) = a < out_lo(r) ? a : out_lo(r);
      out_hi(r) = b > out_hi(r) ? b : out_hi(r);
    });
  }
};

class BinCountsOp : public OpKernel {
 public:
  explicit BinCountsOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("num_bins", &num_bins_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    OP_REQUIRES(context, input.dims() == 2, errors::InvalidArgument("rows must be (channels, values)"));
    const int64_t rows = input.dim_size(0), n = input.dim_size(1);
    OP_REQUIRES(context, context->input(1).NumElements() == rows && context->input(2).NumElements() == rows,
                errors::InvalidArgument("lo and hi must have one value per row"));
    Tensor* counts = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({rows, num_bins_}), &counts));
    auto x = input.matrix<float>();
    auto lo = context->input(1).flat<float>();
    auto hi = context->input(2).flat<float>();
    std::vector<int64_t> total(rows * num_bins_, 0);
    const float bins = static_cast<float>(num_bins_), last = static_cast<float>(num_bins_ - 1);
    std::mutex mu;
    ForEachShard(context, rows, n, [&](int64_t r, int64_t begin, int64_t end) {
      std::vector<int64_t> local(num_bins_, 0);
      const float start = lo(r), width = hi(r) - lo(r);
      const float* v = &x(r, 0);
      for (int64_t i = begin; i < end; ++i) {
        const float position = ((v[i] - start) * bins) / width;
        if (std::isnan(position)) continue;  // NaN values are dropped
        const float clipped = position < 0.0f ? 0.0f : (position > last ? last : position);
        ++local[static_cast<int64_t>(clipped)];  // ≥ 0: the truncation is the floor
      }
      std::lock_guard<std::mutex> lock(mu);
      for (int64_t b = 0; b < num_bins_; ++b) total[r * num_bins_ + b] += local[b];
    });
    auto out = counts->flat<double>();
    for (int64_t i = 0; i < rows * num_bins_; ++i) out(i) = static_cast<double>(total[i]);
  }

 private:
  int64_t num_bins_;
};

REGISTER_KERNEL_BUILDER(Name("WorkbenchFiniteRange").Device(DEVICE_CPU), FiniteRangeOp);
REGISTER_KERNEL_BUILDER(Name("WorkbenchBinCounts").Device(DEVICE_CPU), BinCountsOp);
