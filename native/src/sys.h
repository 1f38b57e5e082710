#pragma once
#include <napi.h>

namespace raftblock {

Napi::Value AllocAligned(const Napi::CallbackInfo& info);
Napi::Value Lseek(const Napi::CallbackInfo& info);
Napi::Value Crc32c(const Napi::CallbackInfo& info);
bool HasHardwareCrc32c();

}  // namespace raftblock
