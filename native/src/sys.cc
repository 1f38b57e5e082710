// Small synchronous system calls: aligned slabs, lseek(SEEK_DATA/SEEK_HOLE), FIEMAP.
#include <errno.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "errors.h"
#include "sys.h"

namespace raftblock {

void ThrowErrno(Napi::Env env, const char* syscall, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + " failed: " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  const char* name = strerrorname_np(err);
  if (name != nullptr) e.Set("code", Napi::String::New(env, name));
  e.ThrowAsJavaScriptException();
}

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

// unwrittenExtents(fd, start, end, maxRanges) -> Float64Array of [from, to) pairs, in order: the
// parts of [start, end) that the file holds in allocated but unwritten extents
// (FIEMAP_EXTENT_UNWRITTEN: a FALLOC_FL_ZERO_RANGE, a preallocation). They read as zeros, and
// SEEK_DATA counts them as holes although they are allocated. At most maxRanges pairs: with that
// many, what lies past the last one's end was not looked at (a client can make a file of
// millions of them). Empty where the filesystem has no FIEMAP.
Napi::Value UnwrittenExtents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber()) {
    Napi::TypeError::New(env, "unwrittenExtents(fd, start, end, maxRanges)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t start = info[1].As<Napi::Number>().Int64Value();
  int64_t end = info[2].As<Napi::Number>().Int64Value();
  int64_t maxRanges = info[3].As<Napi::Number>().Int64Value();
  if (start < 0 || end < start || maxRanges < 1) {
    Napi::RangeError::New(env, "unwrittenExtents: need 0 <= start <= end and maxRanges >= 1").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const size_t maxValues = static_cast<size_t>(std::min<int64_t>(maxRanges, 1 << 24)) * 2;
  constexpr uint32_t kExtentsPerCall = 64;
  std::vector<uint8_t> buf(sizeof(struct fiemap) + kExtentsPerCall * sizeof(struct fiemap_extent));
  std::vector<double> out;
  uint64_t pos = static_cast<uint64_t>(start);
  const uint64_t stop = static_cast<uint64_t>(end);
  while (pos < stop) {
    // The header is the input (the kernel fills the extents it maps, up to the count).
    memset(buf.data(), 0, sizeof(struct fiemap));
    auto* fm = reinterpret_cast<struct fiemap*>(buf.data());
    fm->fm_start = pos;
    fm->fm_length = stop - pos;
    fm->fm_extent_count = kExtentsPerCall;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
      if (errno == EOPNOTSUPP || errno == ENOTTY) break;
      ThrowErrno(env, "ioctl(FS_IOC_FIEMAP)", errno);
      return env.Undefined();
    }
    if (fm->fm_mapped_extents == 0) break;
    bool last = false;
    uint64_t next = pos;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
      const struct fiemap_extent& e = fm->fm_extents[i];
      uint64_t from = std::max<uint64_t>(e.fe_logical, pos);
      uint64_t to = std::min<uint64_t>(e.fe_logical + e.fe_length, stop);
      if ((e.fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0 && from < to) {
        if (!out.empty() && out.back() == static_cast<double>(from)) {
          out.back() = static_cast<double>(to);
        } else {
          if (out.size() >= maxValues) {
            last = true;
            break;
          }
          out.push_back(static_cast<double>(from));
          out.push_back(static_cast<double>(to));
        }
      }
      next = std::max<uint64_t>(next, e.fe_logical + e.fe_length);
      if ((e.fe_flags & FIEMAP_EXTENT_LAST) != 0) last = true;
    }
    if (last || fm->fm_mapped_extents < kExtentsPerCall || next <= pos) break;
    pos = next;
  }
  Napi::Float64Array arr = Napi::Float64Array::New(env, out.size());
  if (!out.empty()) memcpy(arr.Data(), out.data(), out.size() * sizeof(double));
  return arr;
}

}  // namespace raftblock
