// SelectKept's choice for one row, shared by the CPU kernel and the CUDA op's host fallback (no ORT or CUDA
// headers): the k best of L scores ranked as pruning/select_triton.py ranks them, ties to the lowest position,
// written in ascending order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

namespace simba {

// int32 whose signed order is the float order, -0.0 keyed as +0.0, NaN as -inf, a protected position one above
// +inf (select_triton.py's keys).
inline int32_t select_kept_key(float x, bool is_protected) {
  if (is_protected) return 2139095041;
  if (x != x) return -2139095041;
  if (x == 0.0f) return 0;
  int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits < 0 ? (bits ^ 0x7FFFFFFF) : bits;
}

// score [L] -> out [k] (1 <= k <= L), the last min(protect, L) positions protected.
inline void select_kept_row(const float* score, int64_t L, int64_t k, int64_t protect, int64_t* out) {
  std::vector<int32_t> key(static_cast<size_t>(L));
  for (int64_t t = 0; t < L; ++t) key[t] = select_kept_key(score[t], t >= L - protect);
  std::vector<int64_t> idx(static_cast<size_t>(L));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  auto better = [&](int64_t i, int64_t j) { return key[i] != key[j] ? key[i] > key[j] : i < j; };
  std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), better);
  std::sort(idx.begin(), idx.begin() + k);
  std::copy(idx.begin(), idx.begin() + k, out);
}

}  // namespace simba
