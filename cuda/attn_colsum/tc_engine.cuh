// kvsift/cuda/attn_colsum/tc_engine.cuh: the tensor-core engine of the fused column-sum kernels
// (cuda/attn_colsum.cuh): f16/bf16, D 64 or 128.
#pragma once
#include "device.cuh"

namespace kvsift::cuda::colsum {

// ------------------------------------------------------------------------------------------
// Tensor-core engine: 4 warps, each owning 32 rows (two 16-row MMA tiles) of a 128-row chunk
// against 64-key tiles. Q fragments stay in registers for the whole item; K tiles are
// double-buffered in shared memory, rows XOR-swizzled in 16-byte units so ldmatrix is
// conflict-free. The Q chunk is staged through the same buffer before the K stream starts.
template <typename T, int D>
struct TcEngine {
  static_assert(D == 64 || D == 128, "tensor-core engine: D must be 64 or 128");
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  // D=128 needs ~225 registers without spills (Q fragments alone hold 64), so two blocks per
  // SM; D=64 fits three.
  static constexpr int kMinBlocks = D == 64 ? 3 : 2;
  static constexpr int kMT = 2;
  static constexpr int kRC = kWarps * kMT * 16;
  static constexpr int kTN = 64;
  static constexpr int kKS = D / 16;
  static constexpr int kRowBytes = D * 2;
  static constexpr int kVecPerRow = D / 8;
  static constexpr int kStageBytes = kTN * kRowBytes;
  static constexpr int kBufBytes = 2 * kStageBytes;
  static_assert(kRC * kRowBytes == kBufBytes, "the Q chunk must fit the two K stages exactly");
  static constexpr int kMaxSlots = kWarps * kMT;
  struct Buf {
    alignas(128) unsigned char bytes[kBufBytes];
  };
  using Sh = Shared<TcEngine>;

  struct Rows {
    int pos[kMT][2];  // query position of the lane's rows; -1 for padding rows
    int bhq[kMT][2];  // b * Hq + hq, the noise's head index
    int rq[kMT][2];   // query index within the window / step
    bool ok[kMT][2];
  };

  static __device__ __forceinline__ uint32_t swz(int row, int vec) {
    return static_cast<uint32_t>(row * kRowBytes + ((vec ^ (row & 7)) << 4));
  }

  static __device__ void load_q(const Args& a, unsigned char* buf, int b, int hkv, int c0) {
    const uint16_t* q = static_cast<const uint16_t*>(a.q) + static_cast<int64_t>(b) * a.q_sB;
    const bool vec = a.vec_q != 0;
    for (int idx = static_cast<int>(threadIdx.x); idx < kRC * kVecPerRow; idx += kThreads) {
      const int i = idx / kVecPerRow, c = idx - i * kVecPerRow;
      int g, r;
      const bool ok = row_map(a, c0 + i, g, r);
      const uint16_t* src =
          ok ? q + static_cast<int64_t>(hkv * a.G + g) * a.q_sH + static_cast<int64_t>(r) * a.q_sS +
                   c * 8
             : q;
      copy16(buf + swz(i, c), src, ok, vec);
    }
  }

  static __device__ __forceinline__ void load_k(const Args& a, unsigned char* stage,
                                                const uint16_t* kb, int key0, int load_hi) {
    const bool vec = a.vec_k != 0;
#pragma unroll
    for (int it = 0; it < kTN * kVecPerRow / kThreads; ++it) {
      const int idx = static_cast<int>(threadIdx.x) + it * kThreads;
      const int n = idx / kVecPerRow, c = idx - n * kVecPerRow;
      const int key = key0 + n;
      const bool ok = key < load_hi;
      const uint16_t* src = ok ? kb + static_cast<int64_t>(key) * a.k_sS + c * 8 : kb;
      copy16(stage + swz(n, c), src, ok, vec);
    }
  }

  // A fragments of the warp's two row tiles, all of D.
  static __device__ __forceinline__ void load_q_frags(uint32_t sbuf, uint32_t (&qa)[kMT][kKS][4]) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const int mi = lane >> 3, rr = lane & 7;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const int row = warp * 32 + mt * 16 + (mi & 1) * 8 + rr;
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) {
        const int ch = ks * 2 + (mi >> 1);
        ldsm_x4(sbuf + static_cast<uint32_t>(row * kRowBytes + ((ch ^ rr) << 4)), qa[mt][ks][0],
                qa[mt][ks][1], qa[mt][ks][2], qa[mt][ks][3]);
      }
    }
  }

  // Raw dot products of the warp's 32 rows with keys [ng*32, ng*32 + 32) of the stage.
  // x[mt][nt][e]: row warp*32 + mt*16 + (e>>1)*8 + lane/4, key ng*32 + nt*8 + (lane%4)*2 + (e&1).
  static __device__ __forceinline__ void qk_group(float (&x)[kMT][4][4],
                                                  const uint32_t (&qa)[kMT][kKS][4],
                                                  uint32_t sstage, int ng) {
    const int lane = static_cast<int>(threadIdx.x) & 31;
    const int mi = lane >> 3, rr = lane & 7;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) x[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        const int n = ng * 32 + np * 16 + (mi >> 1) * 8 + rr;
        const int ch = ks * 2 + (mi & 1);
        uint32_t b0, b1, b2, b3;
        ldsm_x4(sstage + static_cast<uint32_t>(n * kRowBytes + ((ch ^ rr) << 4)), b0, b1, b2, b3);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<T>(x[mt][np * 2], qa[mt][ks], b0, b1);
          mma_16816<T>(x[mt][np * 2 + 1], qa[mt][ks], b2, b3);
        }
      }
    }
  }

  // Dot products to base-2 logits: dot * c1 + off (+ noise), masked to -inf past each row's
  // position when the tile reaches past the chunk's smallest position.
  template <class Op>
  static __device__ __forceinline__ void logits(const Args& a, float (&x)[kMT][4][4], int key0,
                                                const float (&off)[kMT][2], const Rows& rw,
                                                bool mask) {
    const int lane = static_cast<int>(threadIdx.x) & 31;
    const int kc = key0 + ((lane & 3) << 1);
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int hh = e >> 1;
          const int key = kc + nt * 8 + (e & 1);
          float v = fmaf(x[mt][nt][e], a.c1, off[mt][hh]);
          if constexpr (Op::kNoise) {
            if (key <= rw.pos[mt][hh]) {
              v = fmaf(gumbel_at(a.seed, a.step, static_cast<uint32_t>(rw.bhq[mt][hh]),
                                 static_cast<uint32_t>(rw.rq[mt][hh]), static_cast<uint32_t>(key)),
                       a.c2, v);
            }
          }
          if (mask && key > rw.pos[mt][hh]) v = -INFINITY;
          x[mt][nt][e] = v;
        }
  }

  // The row of chunk c0 that this lane's accumulators (mt, hh) belong to: warp w owns rows
  // [32w, 32w + 32), m-tile mt 16 of them, and the mma layout puts lane's values in rows lane / 4
  // (hh = 0) and lane / 4 + 8 (hh = 1).
  static __device__ __forceinline__ int lane_row(int c0, int mt, int hh) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    return c0 + warp * 32 + mt * 16 + hh * 8 + (lane >> 2);
  }

  static __device__ __forceinline__ void row_setup(const Args& a, int b, int hkv, int L, int c0,
                                                   Rows& rw) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int i = lane_row(c0, mt, hh);
        int g, r;
        const bool ok = row_map(a, i, g, r);
        rw.ok[mt][hh] = ok;
        rw.pos[mt][hh] = ok ? L - a.T + r : -1;
        rw.bhq[mt][hh] = b * a.Hq + hkv * a.G + g;
        rw.rq[mt][hh] = r;
      }
  }

  // Stages the Q chunk and leaves its fragments in registers; the buffer is free afterwards.
  static __device__ __forceinline__ void stage_q(const Args& a, unsigned char* buf, int b, int hkv,
                                                 int c0, uint32_t (&qa)[kMT][kKS][4]) {
    __syncthreads();  // the buffer's previous readers are done
    load_q(a, buf, b, hkv, c0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    load_q_frags(smem_u32(buf), qa);
    __syncthreads();  // the K stream overwrites the staged Q next
  }

  // Streams ntiles key tiles through the two stages; compute(t, stage) runs between barriers
  // with the tile resident, after(t) once every warp has finished computing on it.
  template <class Compute, class After>
  static __device__ __forceinline__ void stream_tiles(const Args& a, unsigned char* buf,
                                                      const uint16_t* kb, int key_lo, int ntiles,
                                                      int load_hi, Compute&& compute,
                                                      After&& after) {
    const uint32_t sbuf = smem_u32(buf);
    if (ntiles > 0) load_k(a, buf, kb, key_lo, load_hi);
    cp_async_commit();
    for (int t = 0; t < ntiles; ++t) {
      if (t + 1 < ntiles) load_k(a, buf + ((t + 1) & 1) * kStageBytes, kb, key_lo + (t + 1) * kTN, load_hi);
      cp_async_commit();  // possibly empty, so wait_group<1> always means "tile t landed"
      cp_async_wait<1>();
      __syncthreads();
      compute(t, sbuf + static_cast<uint32_t>((t & 1) * kStageBytes));
      __syncthreads();  // stage t&1 is refilled by the next iteration's load
      after(t);
    }
  }

  // Streams ntiles key tiles from key_lo past the staged Q fragments qa and hands each 32-key
  // group's logits (row offsets `off` applied, causal mask where a tile needs it) to
  // group(x, ng); after(t) runs once tile t's stage is free. A warp whose rows are all padding
  // skips the math but keeps every barrier.
  template <class Op, class Group, class After>
  static __device__ __forceinline__ void stream_logits(const Args& a, Sh& sh, const uint16_t* kb, int c0, int L,
                                                       int key_lo, int ntiles, const uint32_t (&qa)[kMT][kKS][4],
                                                       const float (&off)[kMT][2], const Rows& rw, Group&& group,
                                                       After&& after) {
    const int warp = static_cast<int>(threadIdx.x) >> 5;
    const bool active = c0 + warp * 32 < a.rows_p;
    const int min_pos = chunk_min_pos(a, c0, kRC, L);
    stream_tiles(
        a, sh.buf.bytes, kb, key_lo, ntiles, L,
        [&](int t, uint32_t st) {
          const int tile0 = key_lo + t * kTN;
          const bool mask = tile0 + kTN - 1 > min_pos;
          if (!active) return;
#pragma unroll 1  // unrolled, the two groups' fragments would be live at once
          for (int ng = 0; ng < kTN / 32; ++ng) {
            float x[kMT][4][4];
            qk_group(x, qa, st, ng);
            logits<Op>(a, x, tile0 + ng * 32, off, rw, mask);
            group(x, ng);
          }
        },
        after);
  }

  template <class Op>
  static __device__ void pass1(const Args& a, Sh& sh, int b, int hkv, int h, int L, int c0,
                               int key_lo, int key_hi, int split) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    uint32_t qa[kMT][kKS][4];
    stage_q(a, sh.buf.bytes, b, hkv, c0, qa);
    Rows rw;
    row_setup(a, b, hkv, L, c0, rw);
    const float zero[kMT][2] = {};
    float m[kMT][2], s[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        m[mt][hh] = -INFINITY;
        s[mt][hh] = 0.f;
      }
    const int ntiles = (key_hi - key_lo + kTN - 1) / kTN;
    stream_logits<Op>(
        a, sh, k_head<uint16_t>(a, b, hkv), c0, L, key_lo, ntiles, qa, zero, rw,
        [&](float (&x)[kMT][4][4], int) {
          // Online (max, sum) per lane and row; the quad's lanes merge once at the end.
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
              float mx = -INFINITY;
#pragma unroll
              for (int nt = 0; nt < 4; ++nt)
                mx = fmaxf(mx, fmaxf(x[mt][nt][hh * 2], x[mt][nt][hh * 2 + 1]));
              const float mn = fmaxf(m[mt][hh], mx);
              const float mu = (mn == -INFINITY) ? 0.f : mn;
              float sum = 0.f;
#pragma unroll
              for (int nt = 0; nt < 4; ++nt)
                sum += fast_exp2(x[mt][nt][hh * 2] - mu) + fast_exp2(x[mt][nt][hh * 2 + 1] - mu);
              s[mt][hh] = s[mt][hh] * fast_exp2(m[mt][hh] - mu) + sum;
              m[mt][hh] = mn;
            }
        },
        [](int) {});
    // A row's keys are spread over a quad of lanes: merge the quad, its first lane stores.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        lse_merge_lanes<4>(m[mt][hh], s[mt][hh]);
        // The row is spelled out, not lane_row(c0, mt, hh): with that call here nvcc 13 gives
        // the kernel about 30 more registers (ptxas --resource-usage) for the same code.
        if ((lane & 3) == 0 && rw.ok[mt][hh]) {
          store_partial(a, h, split, c0 + warp * 32 + mt * 16 + hh * 8 + (lane >> 2), m[mt][hh], s[mt][hh]);
        }
      }
  }

  template <class Op>
  static __device__ void pass2(const Args& a, Sh& sh, int b, int hkv, int h, int L, int key_lo,
                               int ntiles, int limit) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const bool per_head = folds_per_head<Op>(a);
    const int nslots = per_head ? kWarps * kMT : kWarps;
    const int rps = per_head ? 16 : kMT * 16;
    // Column of the tile this lane's reduce_scatter8 result belongs to (see qk_group).
    const int col = ((lane >> 3) << 3) + ((lane & 3) << 1) + ((lane >> 2) & 1);
    const uint16_t* kb = k_head<uint16_t>(a, b, hkv);
    for (int c = 0; c < a.chunks; ++c) {
      const int c0 = c * kRC;
      uint32_t qa[kMT][kKS][4];
      stage_q(a, sh.buf.bytes, b, hkv, c0, qa);
      Rows rw;
      row_setup(a, b, hkv, L, c0, rw);
      float off[kMT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
          off[mt][hh] = -row_lse2(a, b, hkv, h, lane_row(c0, mt, hh), rw.rq[mt][hh], rw.ok[mt][hh]);
      stream_logits<Op>(
          a, sh, kb, c0, L, key_lo, ntiles, qa, off, rw,
          [&](float (&x)[kMT][4][4], int ng) {
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
              for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) x[mt][nt][e] = fast_exp2(x[mt][nt][e]);
            if (per_head) {
#pragma unroll
              for (int mt = 0; mt < kMT; ++mt) {
                float v[8];
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                  for (int j = 0; j < 2; ++j) v[nt * 2 + j] = x[mt][nt][j] + x[mt][nt][j + 2];
                sh.red[(warp * kMT + mt) * kTN + ng * 32 + col] = reduce_scatter8(v, lane);
              }
            } else {
              float v[8];
#pragma unroll
              for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                  float acc = 0.f;
#pragma unroll
                  for (int mt = 0; mt < kMT; ++mt) acc += x[mt][nt][j] + x[mt][nt][j + 2];
                  v[nt * 2 + j] = acc;
                }
              sh.red[warp * kTN + ng * 32 + col] = reduce_scatter8(v, lane);
            }
          },
          [&](int t) {
            fold_tile(a, sh.red, kTN, nslots, rps, per_head, c0, c == 0, t * kTN, key_lo, b, hkv,
                      limit, sh.fin, sh.cur);
          });
    }
  }
};

}  // namespace kvsift::cuda::colsum
