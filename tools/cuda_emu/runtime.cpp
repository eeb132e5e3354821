// The scheduler of the CUDA emulator (cuda_emu.h) and the CUDA runtime functions the kernels call.
//
// A launch runs its blocks one at a time (so `static` shared arrays are per block), each block as blockDim
// fibers (ucontext) on the calling thread. Fibers run, in the schedule's order, until they wait at a barrier or
// finish; when none can run, the scheduler releases a warp whose named lanes all wait at the same shuffle, else
// the block if every live thread waits at the same __syncthreads, else it reports the launch as failed with what
// each thread waits for (a deadlock or undefined behaviour on the hardware).
#include "cuda_emu.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

// Bounds of the section holding every static __shared__ array (cuda_emu.h); the linker defines them.
extern "C" {
extern unsigned char __start_fa_emu_shared[] __attribute__((weak));
extern unsigned char __stop_fa_emu_shared[] __attribute__((weak));
}

namespace fa_emu {

thread_local Builtins builtins;

namespace {

enum class State { Runnable, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  ucontext_t ctx;
  State state = State::Runnable;
  const char* file = nullptr;  // where it waits
  int line = 0;
  int phase = 0;  // which of a shuffle's two warp barriers
  unsigned mask = 0;
  unsigned char slot[8];  // the value it offers in a shuffle
};

struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  int current_index = 0;
  const std::function<void()>* body = nullptr;
  std::string error;
};

thread_local Block* active = nullptr;

// Stacks: one mapping reused by every launch on this thread (only the pages a fiber touches are committed).
constexpr size_t kStackBytes = 256 * 1024;
thread_local char* stack_base = nullptr;
thread_local size_t stack_count = 0;

char* stacks(size_t n) {
  if (n > stack_count) {
    if (stack_base) munmap(stack_base, stack_count * kStackBytes);
    void* p =
        mmap(nullptr, n * kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    stack_base = static_cast<char*>(p);
    stack_count = n;
  }
  return stack_base;
}

thread_local std::vector<unsigned char> smem_buffer;
thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string last_message;

// Schedule of the fibers between barriers (set_schedule).
int schedule_mode = 0;  // 0 forward, 1 reverse, 2 random
std::mt19937_64 schedule_rng;

struct Stats {
  int64_t launches = 0, blocks = 0, threads = 0, block_barriers = 0, warp_exchanges = 0;
} stats;

std::map<const void*, int> max_dynamic_smem;  // cudaFuncSetAttribute(kernel, MaxDynamicSharedMemorySize, v)
constexpr int kDefaultSmem = 48 * 1024;
constexpr int kOptinSmem = 227 * 1024;  // H100: cudaDevAttrMaxSharedMemoryPerBlockOptin
constexpr int kMultiprocessors = 132;

void fiber_main() {
  Block* b = active;
  (*b->body)();
  b->current->state = State::Done;
  swapcontext(&b->current->ctx, &b->scheduler);  // never resumed
}

// Called on a fiber: wait in `state` until the scheduler releases it.
void wait(State state, const char* file, int line, int phase, unsigned mask) {
  Block* b = active;
  Fiber* f = b->current;
  f->state = state;
  f->file = file;
  f->line = line;
  f->phase = phase;
  f->mask = mask;
  swapcontext(&f->ctx, &b->scheduler);
}

std::string where(const Fiber& f) {
  switch (f.state) {
    case State::Done:
      return "exited";
    case State::Runnable:
      return "runnable";
    case State::AtBlockBarrier:
      return std::string("__syncthreads at ") + f.file + ":" + std::to_string(f.line);
    case State::AtWarpBarrier:
      return std::string("a shuffle at ") + f.file + ":" + std::to_string(f.line);
  }
  return "?";
}

std::string describe(const Block& b, const dim3& block_idx) {
  std::string s = " (block " + std::to_string(block_idx.x) + "," + std::to_string(block_idx.y) + "," +
                  std::to_string(block_idx.z) + "):";
  // threads grouped by what they wait for, as "t0-t31: ..."
  size_t i = 0;
  while (i < b.fibers.size()) {
    size_t j = i + 1;
    const std::string w = where(b.fibers[i]);
    while (j < b.fibers.size() && where(b.fibers[j]) == w) ++j;
    s += " threads " + std::to_string(i) + "-" + std::to_string(j - 1) + ": " + w + ";";
    i = j;
  }
  return s;
}

// Releases one warp whose lanes named by its waiters' mask all wait at the same shuffle barrier. Returns true if
// it released one; sets b.error on an exchange that cannot complete.
bool release_warp(Block& b, size_t warp) {
  const size_t n = b.fibers.size(), base = warp * 32;
  const size_t lanes = std::min<size_t>(32, n - base);
  const Fiber* first = nullptr;
  for (size_t l = 0; l < lanes; ++l)
    if (b.fibers[base + l].state == State::AtWarpBarrier) {
      first = &b.fibers[base + l];
      break;
    }
  if (!first) return false;
  for (int l = 0; l < 32; ++l) {
    if (!(first->mask >> l & 1u)) continue;
    if (static_cast<size_t>(l) >= lanes) {
      b.error = "shuffle at " + std::string(first->file) + ":" + std::to_string(first->line) + " names lane " +
                std::to_string(l) + " of warp " + std::to_string(warp) + ", which does not exist";
      return false;
    }
    const Fiber& f = b.fibers[base + l];
    if (f.state == State::Runnable) return false;  // not there yet
    if (f.state != State::AtWarpBarrier || f.line != first->line || std::strcmp(f.file, first->file) != 0 ||
        f.phase != first->phase || f.mask != first->mask) {
      b.error = "shuffle at " + std::string(first->file) + ":" + std::to_string(first->line) + " (mask 0x" +
                [&] {
                  char h[16];
                  std::snprintf(h, sizeof h, "%08x", first->mask);
                  return std::string(h);
                }() +
                ") waits for lane " + std::to_string(l) + " of warp " + std::to_string(warp) + ", which is at " +
                where(f);
      return false;
    }
  }
  for (int l = 0; l < 32; ++l)
    if (first->mask >> l & 1u) b.fibers[base + l].state = State::Runnable;
  return true;
}

cudaError_t fail(cudaError_t code, const std::string& message) {
  last_error = code;
  last_message = "fa_emu: " + message;
  return code;
}

}  // namespace

void block_barrier(const char* file, int line) {
  ++stats.block_barriers;
  wait(State::AtBlockBarrier, file, line, 0, 0);
}

void warp_exchange(const void* value, void* out, int bytes, unsigned mask, int lane_mask, int width, const char* file,
                   int line) {
  Block* b = active;
  Fiber* f = b->current;
  const int index = b->current_index, lane = index & 31;
  ++stats.warp_exchanges;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    b->error = "shuffle at " + std::string(file) + ":" + std::to_string(line) + " with width " + std::to_string(width) +
               " (a power of two <= 32)";
    wait(State::AtWarpBarrier, file, line, -1, 0);  // never released: the launch stops
  }
  if (!(mask >> lane & 1u)) {
    b->error = "shuffle at " + std::string(file) + ":" + std::to_string(line) + " executed by lane " +
               std::to_string(lane) + ", which its mask does not name";
    wait(State::AtWarpBarrier, file, line, -1, 0);
  }
  std::memcpy(f->slot, value, bytes);
  wait(State::AtWarpBarrier, file, line, 0, mask);
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;  // outside the segment: own value
  std::memcpy(out, b->fibers[(index & ~31) + src].slot, bytes);
  wait(State::AtWarpBarrier, file, line, 1, mask);  // every lane has read before any slot is overwritten
}

unsigned char* dynamic_smem() {
  return smem_buffer.data();
}

cudaError_t launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, const void* kernel,
                   const std::function<void()>& body) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u)
    return fail(cudaErrorInvalidConfiguration, "launch of grid (" + std::to_string(grid.x) + "," +
                                                   std::to_string(grid.y) + "," + std::to_string(grid.z) +
                                                   ") x block (" + std::to_string(block.x) + "," +
                                                   std::to_string(block.y) + "," + std::to_string(block.z) + ")");
  if (smem > static_cast<size_t>(kDefaultSmem)) {
    const auto it = max_dynamic_smem.find(kernel);
    const int limit = it == max_dynamic_smem.end() ? kDefaultSmem : it->second;
    if (smem > static_cast<size_t>(limit))
      return fail(cudaErrorInvalidValue, "launch with " + std::to_string(smem) +
                                             " bytes of dynamic shared memory, over the kernel's limit of " +
                                             std::to_string(limit) + " (cudaFuncSetAttribute)");
  }
  char* stack = stacks(threads);
  if (!stack) return fail(cudaErrorMemoryAllocation, "no memory for fiber stacks");
  ++stats.launches;

  Block b;
  b.body = &body;
  b.fibers.resize(threads);
  Block* const outer = active;  // a launch from inside a kernel is not supported; keep the state sane
  active = &b;
  smem_buffer.assign(smem, 0xff);
  std::vector<size_t> order(threads);
  for (uint32_t bz = 0; bz < grid.z && b.error.empty(); ++bz)
    for (uint32_t by = 0; by < grid.y && b.error.empty(); ++by)
      for (uint32_t bx = 0; bx < grid.x && b.error.empty(); ++bx) {
        ++stats.blocks;
        stats.threads += threads;
        std::fill(smem_buffer.begin(), smem_buffer.end(), 0xff);  // uninitialised reads see NaN
        if (__start_fa_emu_shared && __stop_fa_emu_shared > __start_fa_emu_shared)
          std::memset(__start_fa_emu_shared, 0xff, __stop_fa_emu_shared - __start_fa_emu_shared);
        for (size_t i = 0; i < threads; ++i) {
          Fiber& f = b.fibers[i];
          f.state = State::Runnable;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = stack + i * kStackBytes;
          f.ctx.uc_stack.ss_size = kStackBytes;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, fiber_main, 0);
        }
        const dim3 block_idx(bx, by, bz);
        while (b.error.empty()) {
          for (size_t i = 0; i < threads; ++i) order[i] = i;
          if (schedule_mode == 1) std::reverse(order.begin(), order.end());
          if (schedule_mode == 2) std::shuffle(order.begin(), order.end(), schedule_rng);
          for (size_t k = 0; k < threads && b.error.empty(); ++k) {
            const size_t i = order[k];
            Fiber& f = b.fibers[i];
            if (f.state != State::Runnable) continue;
            b.current = &f;
            b.current_index = static_cast<int>(i);
            builtins.thread_idx =
                make_uint3(static_cast<unsigned>(i % block.x), static_cast<unsigned>(i / block.x % block.y),
                           static_cast<unsigned>(i / (block.x * block.y)));
            builtins.block_idx = make_uint3(bx, by, bz);
            builtins.block_dim = block;
            builtins.grid_dim = grid;
            swapcontext(&b.scheduler, &f.ctx);
          }
          if (!b.error.empty()) break;
          size_t done = 0, at_block = 0;
          for (const Fiber& f : b.fibers) {
            done += f.state == State::Done;
            at_block += f.state == State::AtBlockBarrier;
          }
          if (done == threads) break;
          bool released = false;
          for (size_t w = 0; w * 32 < threads && b.error.empty(); ++w) released |= release_warp(b, w);
          if (released || !b.error.empty()) continue;
          if (at_block == threads - done) {
            const Fiber* first = nullptr;
            for (const Fiber& f : b.fibers)
              if (f.state == State::AtBlockBarrier) {
                if (!first) first = &f;
                if (f.line != first->line || std::strcmp(f.file, first->file) != 0) {
                  b.error = "divergent __syncthreads";
                  break;
                }
              }
            if (b.error.empty() && done > 0) b.error = "__syncthreads after some threads of the block exited";
            if (!b.error.empty()) break;
            for (Fiber& f : b.fibers)
              if (f.state == State::AtBlockBarrier) f.state = State::Runnable;
            continue;
          }
          b.error = "deadlock";
        }
        if (!b.error.empty()) b.error += describe(b, block_idx);
      }
  active = outer;
  if (!b.error.empty()) {
    std::fprintf(stderr, "fa_emu: %s\n", b.error.c_str());
    return fail(cudaErrorLaunchFailure, b.error);
  }
  return cudaSuccess;
}

void set_schedule(int mode, uint64_t seed) {
  schedule_mode = mode;
  schedule_rng.seed(seed);
}

std::vector<int64_t> read_stats(bool reset) {
  std::vector<int64_t> v = {stats.launches, stats.blocks, stats.threads, stats.block_barriers, stats.warp_exchanges};
  if (reset) stats = Stats{};
  return v;
}

const char* last_error_message() {
  return last_message.c_str();
}

}  // namespace fa_emu

// ------------------------------------------------------------------------------ CUDA runtime API, on the host
extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = fa_emu::last_error;
  fa_emu::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  return fa_emu::last_error;
}

const char* cudaGetErrorString(cudaError_t error) {
  if (error == cudaSuccess) return "no error";
  if (!fa_emu::last_message.empty()) return fa_emu::last_message.c_str();
  return "fa_emu: CUDA error";
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device != 0) return fa_emu::fail(cudaErrorInvalidDevice, "device " + std::to_string(device));
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = fa_emu::kOptinSmem;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = fa_emu::kDefaultSmem;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = fa_emu::kMultiprocessors;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = 32;
      return cudaSuccess;
    default:
      return fa_emu::fail(cudaErrorInvalidValue, "device attribute " + std::to_string(attr) + " not emulated");
  }
}

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
    return fa_emu::fail(cudaErrorInvalidValue, "function attribute " + std::to_string(attr) + " not emulated");
  if (value < 0 || value > fa_emu::kOptinSmem)
    return fa_emu::fail(cudaErrorInvalidValue, "MaxDynamicSharedMemorySize " + std::to_string(value));
  fa_emu::max_dynamic_smem[func] = value;
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind, cudaStream_t) {
  std::memmove(dst, src, count);
  return cudaSuccess;
}

}  // extern "C"
