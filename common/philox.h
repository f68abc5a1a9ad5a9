// kvsift/common/philox.h: the counter-based Philox4x32-10 generator (Salmon et al., SC'11), usable
// from host and device code, so the CPU backend and the CUDA kernels draw the very same bits.
// Keyformer's noise is keyed by (seed, step, batch, head, query, key): any element can be
// regenerated on demand, which lets the two softmax passes share noise without storing it.
#pragma once
#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace kvsift {

struct Philox4 {
  uint32_t v[4];
};

KVSIFT_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Ten rounds of Philox4x32 on counter c with key (k0, k1).
KVSIFT_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  const uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = philox_mulhilo(M0, c.v[0], &hi0);
    uint32_t lo1 = philox_mulhilo(M1, c.v[2], &hi1);
    Philox4 n;
    n.v[0] = hi1 ^ c.v[1] ^ k0;
    n.v[1] = lo1;
    n.v[2] = hi0 ^ c.v[3] ^ k1;
    n.v[3] = lo0;
    c = n;
    k0 += W0;
    k1 += W1;
  }
  return c;
}

// The 32 random bits of element (b, h, t, j) at `step`:
// counter = {j, t, b * H + h, step low 32 bits}, key = {seed low, seed high ^ step high}.
KVSIFT_HD uint32_t philox_bits(uint64_t seed, uint64_t step, uint32_t bh, uint32_t t, uint32_t j) {
  Philox4 c;
  c.v[0] = j;
  c.v[1] = t;
  c.v[2] = bh;
  c.v[3] = static_cast<uint32_t>(step);
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32) ^ static_cast<uint32_t>(step >> 32);
  return philox4x32_10(c, k0, k1).v[0];
}

// Uniform on the open interval (0, 1): the top 23 bits plus one half, times 2^-23. Exact in
// float (an odd multiple of 2^-24), never 0 or 1, so both logs below stay finite.
KVSIFT_HD float philox_uniform(uint32_t bits) {
  return (static_cast<float>(bits >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

// Gumbel(0, 1) = -log(-log U). Evaluated in double and rounded once to float, so the host's and
// the device's libm (each within an ulp in double) agree on the float bits.
KVSIFT_HD float gumbel_from_bits(uint32_t bits) {
  double u = static_cast<double>(philox_uniform(bits));
  return static_cast<float>(-log(-log(u)));
}

KVSIFT_HD float philox_gumbel(uint64_t seed, uint64_t step, uint32_t bh, uint32_t t, uint32_t j) {
  return gumbel_from_bits(philox_bits(seed, step, bh, t, j));
}

}  // namespace kvsift
