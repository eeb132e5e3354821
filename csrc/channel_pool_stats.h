// channel_pool's `stats` argument ("max,mean,std": an ordered subset, comma-separated), parsed the same way by
// the CPU kernels and the CUDA bindings.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <string>

namespace fa {

// Output plane of each statistic (-1: not requested), k planes in all.
struct PoolStats {
  int64_t k = 0;
  int64_t max = -1, mean = -1, std = -1;
};

// `backend` names the caller in error messages ("cpu", "cuda").
inline PoolStats parse_pool_stats(c10::string_view text, const char* backend) {
  PoolStats s;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == c10::string_view::npos) end = text.size();
    const c10::string_view name = text.substr(start, end - start);
    int64_t* slot = name == "max" ? &s.max : name == "mean" ? &s.mean : name == "std" ? &s.std : nullptr;
    TORCH_CHECK(slot != nullptr, "fused_attn (", backend, "): unknown channel_pool stat '", std::string(name), "'");
    TORCH_CHECK(*slot < 0, "fused_attn (", backend, "): channel_pool stat '", std::string(name), "' requested twice");
    *slot = s.k++;
    start = end + 1;
  }
  return s;
}

}  // namespace fa
