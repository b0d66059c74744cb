// The ops a compiled step calls, in C++: the same ATen calls as their Python reference
// (`r1::packed_linear` and `r1::paged_attention` in ops.py), without a trip
// through Python per call. Built and loaded by `r1_runtime.models.kernels.native`.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace r1_native {

using Scalars = c10::List<std::optional<at::Scalar>>;

// Also called by the decoder (native_decoder.cpp).
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual, c10::SymInt out_features) {
  if (!residual.has_value()) {
    static auto unary =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                              const std::optional<at::Tensor>&, c10::string_view, Scalars,
                              std::optional<c10::string_view>)>();
    return unary.call(x, weight, bias, "none", Scalars(), "");
  }
  static auto binary =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "binary")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, c10::string_view)>();
  return binary.call(x, *residual, weight, bias, "add");
}

}  // namespace r1_native

namespace {

// One SDPA batch of the step (attention.py's SdpaBatch): `mask` is the additive mask
// [num_seqs, 1, query_len * group, keys]; `query_rows` as PagedBatch.query_rows.
struct Batch {
  at::Tensor block_ids;
  at::Tensor mask;
  std::optional<at::Tensor> query_rows;
  int64_t num_tokens;
};

struct Step {
  at::Tensor kv_cache;  // [layers, 2, blocks, block_size, kv_heads, head_dim]
  at::Tensor slot_mapping;
  std::vector<Batch> batches;
};

// NOTE: the step runs on the thread that set it (the engine loop), so each thread has its own.
thread_local std::optional<Step> current_step;

void set_step(const at::Tensor& kv_cache, const at::Tensor& slot_mapping,
              at::TensorList block_ids, at::TensorList masks,
              const c10::List<std::optional<at::Tensor>>& query_rows,
              at::IntArrayRef num_tokens) {
  TORCH_CHECK(block_ids.size() == masks.size() && masks.size() == query_rows.size() &&
                  masks.size() == num_tokens.size(),
              "r1_native::set_step: one block_ids, mask, query_rows and num_tokens per batch");
  Step step{kv_cache, slot_mapping, {}};
  for (size_t i = 0; i < masks.size(); ++i) {
    step.batches.push_back(Batch{block_ids[i], masks[i], query_rows.get(i), num_tokens[i]});
  }
  current_step = std::move(step);
}

void clear_step() { current_step.reset(); }

at::Tensor attend(const at::Tensor& q_in, const at::Tensor& layer_cache, const Batch& batch) {
  const int64_t num_heads = q_in.size(1), head_dim = q_in.size(2);
  const int64_t num_kv_heads = layer_cache.size(3);
  const int64_t group = num_heads / num_kv_heads;
  const int64_t num_seqs = batch.mask.size(0);
  const int64_t query_len = batch.mask.size(2) / group;
  at::Tensor q = q_in;
  if (batch.query_rows.has_value()) {
    q = q.new_zeros({num_seqs * query_len, num_heads, head_dim})
            .index_copy_(0, *batch.query_rows, q);
  }
  q = q.view({num_seqs, query_len, num_kv_heads, group, head_dim})
          .transpose(1, 2)
          .reshape({num_seqs, num_kv_heads, query_len * group, head_dim});
  at::Tensor pages = layer_cache.index_select(1, batch.block_ids)
                         .view({2, num_seqs, -1, num_kv_heads, head_dim})
                         .transpose(2, 3);
  at::Tensor out = at::scaled_dot_product_attention(q, pages[0], pages[1], batch.mask);
  out = out.view({num_seqs, num_kv_heads, query_len, group, head_dim})
            .transpose(1, 2)
            .reshape({num_seqs * query_len, num_heads, head_dim});
  return batch.query_rows.has_value() ? out.index_select(0, *batch.query_rows) : out;
}

at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           int64_t layer) {
  TORCH_CHECK(current_step.has_value(), "r1_native::paged_attention outside a step: "
                                        "call r1_native::set_step first");
  const Step& step = *current_step;
  at::Tensor layer_cache = step.kv_cache.select(0, layer);
  const int64_t num_kv_heads = layer_cache.size(3), head_dim = layer_cache.size(4);
  layer_cache.select(0, 0).view({-1, num_kv_heads, head_dim}).index_copy_(0, step.slot_mapping, k);
  layer_cache.select(0, 1).view({-1, num_kv_heads, head_dim}).index_copy_(0, step.slot_mapping, v);
  std::vector<at::Tensor> outputs;
  int64_t start = 0;
  for (const Batch& batch : step.batches) {
    const int64_t end = start + batch.num_tokens;
    outputs.push_back(attend(q.slice(0, start, end), layer_cache, batch));
    start = end;
  }
  return outputs.size() == 1 ? outputs[0] : at::cat(outputs);
}

// The first index of each row's maximum, as torch.argmax (a NaN counts as the maximum), in two
// vectorizable passes (torch's argmax along a row is a scalar loop): the row's max, then where
// it first occurs.
at::Tensor argmax(const at::Tensor& logits_in) {
  TORCH_CHECK(logits_in.dim() == 2 && logits_in.scalar_type() == at::kFloat,
              "r1_native::argmax: fp32 logits [rows, vocab]");
  const at::Tensor logits = logits_in.contiguous();
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  at::Tensor out = at::empty({rows}, logits.options().dtype(at::kLong));
  const float* data = logits.const_data_ptr<float>();
  int64_t* ids = out.mutable_data_ptr<int64_t>();
  at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(vocab, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = data + r * vocab;
      float best = -INFINITY;
      bool has_nan = false;
#pragma omp simd reduction(max : best) reduction(|| : has_nan)
      for (int64_t i = 0; i < vocab; ++i) {
        best = std::max(best, row[i]);
        has_nan = has_nan || row[i] != row[i];
      }
      int64_t index = 0;
      while (index < vocab - 1 && (has_nan ? row[index] == row[index] : row[index] != best)) {
        ++index;
      }
      ids[r] = index;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(r1_native, m) {
  m.def("packed_linear(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, "
        "SymInt out_features) -> Tensor");
  m.def("paged_attention(Tensor q, Tensor k, Tensor v, int layer) -> Tensor");
  m.def("set_step(Tensor kv_cache, Tensor slot_mapping, Tensor[] block_ids, Tensor[] masks, "
        "Tensor?[] query_rows, int[] num_tokens) -> ()",
        set_step);
  m.def("clear_step() -> ()", clear_step);
  m.def("argmax(Tensor logits) -> Tensor", argmax);
}

TORCH_LIBRARY_IMPL(r1_native, CPU, m) {
  m.impl("packed_linear", r1_native::packed_linear);
  m.impl("paged_attention", paged_attention);
}

TORCH_LIBRARY_IMPL(r1_native, MkldnnCPU, m) { m.impl("packed_linear", r1_native::packed_linear); }
