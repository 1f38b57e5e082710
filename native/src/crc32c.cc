// CRC32C with the SSE4.2 crc32 instruction (8 bytes a step), for the WAL's record checksums.
// Compiled with a target attribute so the addon still loads on CPUs without SSE4.2;
// hasHardwareCrc32c tells JS whether to use it.
#include <nmmintrin.h>
#include <stdint.h>
#include <string.h>

#include "sys.h"

namespace raftblock {

__attribute__((target("sse4.2"))) static uint32_t Crc32cHw(const uint8_t* p, size_t n, uint32_t seed) {
  uint64_t c = ~seed & 0xffffffffu;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    n--;
  }
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    n--;
  }
  return ~static_cast<uint32_t>(c);
}

bool HasHardwareCrc32c() { return __builtin_cpu_supports("sse4.2"); }

// crc32c(buf: Uint8Array, start, end, seed) -> uint32
Napi::Value Crc32c(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "crc32c(buf, start, end, seed)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
  int64_t start = info[1].As<Napi::Number>().Int64Value();
  int64_t end = info[2].As<Napi::Number>().Int64Value();
  uint32_t seed = info[3].As<Napi::Number>().Uint32Value();
  if (start < 0 || end < start || static_cast<size_t>(end) > buf.ElementLength()) {
    Napi::RangeError::New(env, "crc32c: range outside the buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, Crc32cHw(buf.Data() + start, static_cast<size_t>(end - start), seed));
}

}  // namespace raftblock
