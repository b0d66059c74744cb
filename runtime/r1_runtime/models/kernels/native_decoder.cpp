// The decode step in C++: every layer of `LlamaForCausalLM` for sequences that each add one
// token, in one call. A decode step is bandwidth-bound on the linear layers' weights; what
// surrounds them (norms, rotary, cache writes, attention over a short context) is too small to
// be worth a kernel launch from Python, so it runs here as plain loops, and the linear layers
// call the same oneDNN op as `packed_linear` in native_ops.cpp. Arithmetic follows the Python
// modules (fp32 accumulation, rounding to the model's dtype where they round), not bit for bit:
// reductions sum in another order. Built and loaded by `r1_runtime.models.kernels.native`.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

namespace r1_native {
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual, c10::SymInt out_features);
}  // namespace r1_native

namespace {

// The keys and values of the step's context are cold (the weights streamed through the caches
// since the last step), and a sequence's rows for one kv head are not contiguous: without
// fetching them this many rows ahead, attention waits on memory most of its time.
constexpr int64_t kPrefetchRows = 16;

// NOTE: always inlined: GCC takes a function holding only prefetches for one without effects,
// and deletes its calls.
template <typename T>
__attribute__((always_inline)) inline void prefetch_row(const T* row, int64_t length) {
  const char* bytes = reinterpret_cast<const char*>(row);
  for (int64_t line = 0; line < length * static_cast<int64_t>(sizeof(T)); line += 64) {
    __builtin_prefetch(bytes + line);
  }
}

// One kv head's keys (or values) of one sequence, row t at cache slot `slot[t]`, each fetched
// `kPrefetchRows` rows ahead of its reader.
template <typename T>
struct HeadRows {
  const T* cache;  // the layer's keys (or values), offset to the head
  const int64_t* slot;
  int64_t length, stride, dim;

  __attribute__((always_inline)) void prefetch_first() const {
    for (int64_t t = 0; t < std::min(length, kPrefetchRows); ++t) {
      prefetch_row(cache + slot[t] * stride, dim);
    }
  }

  // Row t, once row t + kPrefetchRows is on its way.
  __attribute__((always_inline)) const T* row(int64_t t) const {
    if (t + kPrefetchRows < length) prefetch_row(cache + slot[t + kPrefetchRows] * stride, dim);
    return cache + slot[t] * stride;
  }
};

// Work below this many multiply-adds stays on the calling thread: a parallel region costs more.
constexpr int64_t kParallelGrain = 1 << 15;

at::Tensor dense(const at::Tensor& x, const at::Tensor& packed_weight,
                  const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual = std::nullopt) {
  return r1_native::packed_linear(x, packed_weight, bias, residual, packed_weight.size(0));
}

// A float rounded to the model's dtype and back: where the Python modules hold a tensor of that
// dtype, this code rounds the same value.
template <typename T>
inline float rounded(float value) {
  return static_cast<float>(static_cast<T>(value));
}

// RMSNorm as `layers.RMSNorm`: normalise in fp32, round, then scale and round again.
template <typename T>
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t rows = x.size(0), width = x.size(1);
  at::Tensor out = at::empty_like(x);
  const T* in = x.const_data_ptr<T>();
  const T* w = weight.const_data_ptr<T>();
  T* o = out.mutable_data_ptr<T>();
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelGrain / width), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* row = in + r * width;
      float squares = 0.f;
#pragma omp simd reduction(+ : squares)
      for (int64_t i = 0; i < width; ++i) {
        const float v = static_cast<float>(row[i]);
        squares += v * v;
      }
      const float scale = 1.f / std::sqrt(squares / static_cast<float>(width) + static_cast<float>(eps));
      for (int64_t i = 0; i < width; ++i) {
        const float normed = rounded<T>(static_cast<float>(row[i]) * scale);
        o[r * width + i] = static_cast<T>(static_cast<float>(w[i]) * normed);
      }
    }
  });
  return out;
}

// e^x to about 1e-7 relative, 0 below e^-87 (a subnormal would slow every multiply it enters)
// and at most e^88: 2^(x log2 e) split into an integer power (the exponent bits) and a Taylor
// polynomial on [-0.5, 0.5]. NOTE: unlike std::exp this vectorizes without -ffast-math, whose
// flush-to-zero mode would reach all of torch.
inline float vector_exp(float x) {
  constexpr float kLowest = -87.f;  // e^-87.3 is the smallest normal float
  constexpr float kHighest = 88.f;  // e^88.7 overflows
  const float t = std::min(std::max(x, kLowest), kHighest) * 1.44269504f;
  const float n = std::nearbyint(t);
  const float f = (t - n) * 0.693147181f;
  const float p =
      1.f + f * (1.f + f * (0.5f + f * (1.f / 6 + f * (1.f / 24 + f * (1.f / 120 + f * (1.f / 720))))));
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < kLowest ? 0.f : p * scale;
}

// SiLU(gate) * up over `[gate | up]` rows, rounding after the SiLU as `silu_and_mul` does.
template <typename T>
at::Tensor silu_and_mul(const at::Tensor& gate_up) {
  const int64_t rows = gate_up.size(0), width = gate_up.size(1) / 2;
  at::Tensor out = at::empty({rows, width}, gate_up.options());
  const T* in = gate_up.const_data_ptr<T>();
  T* o = out.mutable_data_ptr<T>();
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelGrain / width), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* gate = in + r * 2 * width;
      const T* up = gate + width;
      for (int64_t i = 0; i < width; ++i) {
        const float g = static_cast<float>(gate[i]);
        const float silu = rounded<T>(g / (1.f + vector_exp(-g)));
        o[r * width + i] = static_cast<T>(silu * static_cast<float>(up[i]));
      }
    }
  });
  return out;
}

struct LayerWeights {
  at::Tensor input_norm, qkv, o, post_norm, gate_up, down;  // linear weights packed (oneDNN)
  std::optional<at::Tensor> qkv_bias, o_bias, gate_up_bias, down_bias;
};

class Decoder : public torch::CustomClassHolder {
 public:
  // `layer_weights`: per layer input norm, qkv, o, post-attention norm, gate_up, down;
  // `layer_biases`: per layer qkv, o, gate_up, down, None where the layer has no bias.
  // `cos` and `sin` are `layers.RotaryEmbedding`'s tables (sin signed).
  Decoder(at::Tensor embedding, std::vector<at::Tensor> layer_weights,
          c10::List<std::optional<at::Tensor>> layer_biases, at::Tensor final_norm,
          at::Tensor lm_head, at::Tensor cos, at::Tensor sin, int64_t num_heads,
          int64_t num_kv_heads, int64_t head_dim, double eps)
      : embedding_(std::move(embedding)),
        final_norm_(std::move(final_norm)),
        lm_head_(std::move(lm_head)),
        cos_(std::move(cos)),
        sin_(std::move(sin)),
        num_heads_(num_heads),
        num_kv_heads_(num_kv_heads),
        head_dim_(head_dim),
        eps_(eps) {
    TORCH_CHECK(layer_weights.size() % 6 == 0 && layer_biases.size() * 6 == layer_weights.size() * 4,
                "r1_native.Decoder: 6 weights and 4 biases per layer");
    for (size_t i = 0; i < layer_weights.size() / 6; ++i) {
      const at::Tensor* w = &layer_weights[6 * i];
      layers_.push_back(LayerWeights{w[0], w[1], w[2], w[3], w[4], w[5], layer_biases.get(4 * i),
                                     layer_biases.get(4 * i + 1), layer_biases.get(4 * i + 2),
                                     layer_biases.get(4 * i + 3)});
    }
  }

  // One token for each of `input_ids.size(0)` sequences at `positions`, whose blocks are the
  // rows of `block_tables`: writes each layer's keys and values into `kv_cache`
  // `[layers, 2, blocks, block_size, kv_heads, head_dim]`, returns fp32 logits `[seqs, vocab]`.
  at::Tensor decode(const at::Tensor& input_ids, const at::Tensor& positions,
                    const at::Tensor& kv_cache, const at::Tensor& block_tables) {
    TORCH_CHECK(kv_cache.is_contiguous() && kv_cache.dim() == 6 &&
                    kv_cache.size(0) == static_cast<int64_t>(layers_.size()) &&
                    kv_cache.scalar_type() == embedding_.scalar_type(),
                "r1_native.Decoder.decode: kv_cache is not this model's contiguous cache");
    const at::Tensor ids = input_ids.to(at::kLong).contiguous();
    const Slots slots(positions.to(at::kLong).contiguous(), block_tables.to(at::kLong).contiguous(),
                      kv_cache.size(3), kv_cache.size(2), cos_.size(0));
    TORCH_CHECK(slots.rows() == ids.size(0),
                "r1_native.Decoder.decode: one position and one block table row per token");
    if (kv_cache.scalar_type() == at::kBFloat16) {
      return layers<c10::BFloat16>(ids, kv_cache, slots);
    }
    TORCH_CHECK(kv_cache.scalar_type() == at::kFloat,
                "r1_native.Decoder.decode: runs fp32 and bf16 models, not ", kv_cache.scalar_type());
    return layers<float>(ids, kv_cache, slots);
  }

 private:
  // Every cache slot each sequence attends to, its own new token's last: found once per step
  // from the block tables, read by every layer.
  class Slots {
   public:
    // NOTE: checked here, as the loops read and write the cache at these slots unchecked.
    Slots(const at::Tensor& positions, const at::Tensor& block_tables, int64_t block_size,
          int64_t num_blocks, int64_t max_positions) {
      TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == positions.size(0),
                  "r1_native.Decoder.decode: one block table row per position");
      const int64_t* pos = positions.const_data_ptr<int64_t>();
      const int64_t* tables = block_tables.const_data_ptr<int64_t>();
      const int64_t width = block_tables.size(1);
      starts_.push_back(0);
      for (int64_t r = 0; r < positions.size(0); ++r) {
        TORCH_CHECK(pos[r] >= 0 && pos[r] < width * block_size,
                    "r1_native.Decoder.decode: position ", pos[r], " is beyond its block table");
        TORCH_CHECK(pos[r] < max_positions, "r1_native.Decoder.decode: position ", pos[r],
                    " is beyond the rotary tables (", max_positions, " positions)");
        for (int64_t b = 0; b <= pos[r] / block_size; ++b) {
          const int64_t block = tables[r * width + b];
          TORCH_CHECK(block >= 0 && block < num_blocks, "r1_native.Decoder.decode: block ", block,
                      " is not in the cache (", num_blocks, " blocks)");
        }
        for (int64_t t = 0; t <= pos[r]; ++t) {
          slots_.push_back(tables[r * width + t / block_size] * block_size + t % block_size);
        }
        starts_.push_back(static_cast<int64_t>(slots_.size()));
      }
    }
    int64_t rows() const { return static_cast<int64_t>(starts_.size()) - 1; }
    int64_t length(int64_t row) const { return starts_[row + 1] - starts_[row]; }
    const int64_t* of(int64_t row) const { return slots_.data() + starts_[row]; }
    int64_t newest(int64_t row) const { return slots_[starts_[row + 1] - 1]; }
    int64_t position(int64_t row) const { return length(row) - 1; }

   private:
    std::vector<int64_t> slots_, starts_;
  };

  template <typename T>
  at::Tensor layers(const at::Tensor& ids, const at::Tensor& kv_cache, const Slots& slots) {
    at::Tensor x = at::embedding(embedding_, ids);
    for (size_t layer = 0; layer < layers_.size(); ++layer) {
      x = decoder_layer<T>(x, layers_[layer], kv_cache.select(0, layer), slots);
    }
    return dense(rms_norm<T>(x, final_norm_, eps_), lm_head_, std::nullopt).to(at::kFloat);
  }

  template <typename T>
  at::Tensor decoder_layer(const at::Tensor& x, const LayerWeights& w, const at::Tensor& layer_cache,
                           const Slots& slots) {
    at::Tensor qkv = dense(rms_norm<T>(x, w.input_norm, eps_), w.qkv, w.qkv_bias);
    rotate_and_cache<T>(qkv, layer_cache, slots);
    at::Tensor h = dense(attend<T>(qkv, layer_cache, slots), w.o, w.o_bias, x);
    at::Tensor gate_up = dense(rms_norm<T>(h, w.post_norm, eps_), w.gate_up, w.gate_up_bias);
    return dense(silu_and_mul<T>(gate_up), w.down, w.down_bias, h);
  }

  // Rotates the queries and keys in `qkv` in place (`layers.apply_rotary`: rounds `x * cos`,
  // then adds the rotated half times the signed sin), and writes keys and values at each
  // token's slot.
  template <typename T>
  void rotate_and_cache(at::Tensor& qkv, const at::Tensor& layer_cache, const Slots& slots) {
    const int64_t width = qkv.size(1), half = head_dim_ / 2;
    const int64_t rotated_heads = num_heads_ + num_kv_heads_, kv_width = num_kv_heads_ * head_dim_;
    T* data = qkv.mutable_data_ptr<T>();
    T* keys = layer_cache.select(0, 0).mutable_data_ptr<T>();
    T* values = layer_cache.select(0, 1).mutable_data_ptr<T>();
    std::vector<float> head(head_dim_);
    for (int64_t r = 0; r < slots.rows(); ++r) {
      const T* c = cos_.const_data_ptr<T>() + slots.position(r) * head_dim_;
      const T* s = sin_.const_data_ptr<T>() + slots.position(r) * head_dim_;
      for (int64_t h = 0; h < rotated_heads; ++h) {
        T* x = data + r * width + h * head_dim_;
        for (int64_t i = 0; i < head_dim_; ++i) head[i] = static_cast<float>(x[i]);
        for (int64_t i = 0; i < head_dim_; ++i) {
          const float swapped = head[i < half ? i + half : i - half];
          const float scaled = rounded<T>(head[i] * static_cast<float>(c[i]));
          x[i] = static_cast<T>(scaled + swapped * static_cast<float>(s[i]));
        }
      }
      const T* k = data + r * width + num_heads_ * head_dim_;
      std::copy(k, k + kv_width, keys + slots.newest(r) * kv_width);
      std::copy(k + kv_width, k + 2 * kv_width, values + slots.newest(r) * kv_width);
    }
  }

  // Causal attention of each token's query heads over its sequence's cached keys, query head h
  // reading kv head h / group: fp32 scores, softmax and sums. One task per (token, kv head),
  // which loads each key and value once for the group's query heads.
  template <typename T>
  at::Tensor attend(const at::Tensor& qkv, const at::Tensor& layer_cache, const Slots& slots) {
    const int64_t rows = qkv.size(0), width = qkv.size(1), group = num_heads_ / num_kv_heads_;
    const int64_t kv_width = num_kv_heads_ * head_dim_, dim = head_dim_;
    at::Tensor out = at::empty({rows, num_heads_ * dim}, qkv.options());
    const T* q_all = qkv.const_data_ptr<T>();
    const T* keys = layer_cache.select(0, 0).const_data_ptr<T>();
    const T* values = layer_cache.select(0, 1).const_data_ptr<T>();
    T* o = out.mutable_data_ptr<T>();
    const float scale = 1.f / std::sqrt(static_cast<float>(dim));
    int64_t work = 0;
    for (int64_t r = 0; r < rows; ++r) work += slots.length(r) * num_heads_ * dim * 2;
    const int64_t tasks = rows * num_kv_heads_;
    const int64_t grain = std::max<int64_t>(1, tasks * kParallelGrain / std::max<int64_t>(work, 1));
    at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> q(group * dim), row(dim), scores, acc(group * dim);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t r = task / num_kv_heads_, kv_head = task % num_kv_heads_;
        const int64_t length = slots.length(r);
        const int64_t* slot = slots.of(r);
        const T* q_in = q_all + r * width + kv_head * group * dim;
        for (int64_t i = 0; i < group * dim; ++i) q[i] = static_cast<float>(q_in[i]) * scale;
        scores.resize(group * length);
        const HeadRows<T> head_keys{keys + kv_head * dim, slot, length, kv_width, dim};
        const HeadRows<T> head_values{values + kv_head * dim, slot, length, kv_width, dim};
        head_keys.prefetch_first();
        for (int64_t t = 0; t < length; ++t) {
          const T* k = head_keys.row(t);
          for (int64_t i = 0; i < dim; ++i) row[i] = static_cast<float>(k[i]);
          for (int64_t g = 0; g < group; ++g) {
            const float* qg = q.data() + g * dim;
            float dot = 0.f;
#pragma omp simd reduction(+ : dot)
            for (int64_t i = 0; i < dim; ++i) dot += qg[i] * row[i];
            scores[g * length + t] = dot;
          }
        }
        std::vector<float> totals(group);
        for (int64_t g = 0; g < group; ++g) {
          float* sg = scores.data() + g * length;
          const float max_score = *std::max_element(sg, sg + length);
          float total = 0.f;
#pragma omp simd reduction(+ : total)
          for (int64_t t = 0; t < length; ++t) {
            sg[t] = vector_exp(sg[t] - max_score);
            total += sg[t];
          }
          totals[g] = total;
        }
        std::fill(acc.begin(), acc.end(), 0.f);
        head_values.prefetch_first();
        for (int64_t t = 0; t < length; ++t) {
          const T* v = head_values.row(t);
          for (int64_t i = 0; i < dim; ++i) row[i] = static_cast<float>(v[i]);
          for (int64_t g = 0; g < group; ++g) {
            const float p = scores[g * length + t];
            float* ag = acc.data() + g * dim;
            for (int64_t i = 0; i < dim; ++i) ag[i] += p * row[i];
          }
        }
        T* out_heads = o + r * num_heads_ * dim + kv_head * group * dim;
        for (int64_t g = 0; g < group; ++g) {
          for (int64_t i = 0; i < dim; ++i) out_heads[g * dim + i] = static_cast<T>(acc[g * dim + i] / totals[g]);
        }
      }
    });
    return out;
  }

  at::Tensor embedding_, final_norm_, lm_head_, cos_, sin_;
  std::vector<LayerWeights> layers_;
  int64_t num_heads_, num_kv_heads_, head_dim_;
  double eps_;
};

}  // namespace

TORCH_LIBRARY_FRAGMENT(r1_native, m) {
  m.class_<Decoder>("Decoder")
      .def(torch::init<at::Tensor, std::vector<at::Tensor>, c10::List<std::optional<at::Tensor>>,
                       at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t, int64_t, int64_t,
                       double>())
      .def("decode", &Decoder::decode);
}
