// Small synchronous system calls: aligned slabs, lseek(SEEK_DATA/SEEK_HOLE).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"
#include "sys.h"

namespace raftblock {

Napi::Error ErrnoError(Napi::Env env, const char* syscall, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + " failed: " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  const char* name = strerrorname_np(err);
  if (name != nullptr) e.Set("code", Napi::String::New(env, name));
  return e;
}

void ThrowErrno(Napi::Env env, const char* syscall, int err) { ErrnoError(env, syscall, err).ThrowAsJavaScriptException(); }

static void FreeSlab(Napi::Env env, uint8_t* data, size_t* length) {
  Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(*length));
  free(data);
  delete length;
}

// allocAligned(lengthBytes, alignmentBytes): one posix_memalign'd, zeroed slab exposed as a
// Buffer; its finalizer frees it. Callers carve aligned slices and reuse them.
Napi::Value AllocAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "allocAligned(lengthBytes, alignmentBytes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int64_t length = info[0].As<Napi::Number>().Int64Value();
  int64_t alignment = info[1].As<Napi::Number>().Int64Value();
  if (length <= 0 || alignment <= 0 || (alignment & (alignment - 1)) != 0 || length % alignment != 0) {
    Napi::RangeError::New(env, "allocAligned: length must be a positive multiple of a power-of-two alignment")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  void* p = nullptr;
  int rc = posix_memalign(&p, static_cast<size_t>(alignment), static_cast<size_t>(length));
  if (rc != 0) {
    ThrowErrno(env, "posix_memalign", rc);
    return env.Undefined();
  }
  memset(p, 0, static_cast<size_t>(length));
  Napi::MemoryManagement::AdjustExternalMemory(env, length);
  return Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(p), static_cast<size_t>(length), FreeSlab,
                                    new size_t(static_cast<size_t>(length)));
}

// lseek(fd, offset, whence) -> offset, or -1 for ENXIO (no data / no hole at or after offset).
Napi::Value Lseek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "lseek(fd, offset, whence)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  off_t offset = info[1].As<Napi::Number>().Int64Value();
  int whence = info[2].As<Napi::Number>().Int32Value();
  off_t r = lseek(fd, offset, whence);
  if (r < 0) {
    if (errno == ENXIO) return Napi::Number::New(env, -1);
    ThrowErrno(env, "lseek", errno);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(r));
}

}  // namespace raftblock
