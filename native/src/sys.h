#pragma once
#include <napi.h>

namespace raftblock {

Napi::Value AllocAligned(const Napi::CallbackInfo& info);
Napi::Value Lseek(const Napi::CallbackInfo& info);

}  // namespace raftblock
