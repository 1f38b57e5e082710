#pragma once
#include <napi.h>

namespace raftblock {

// extentMap(fd, start, end, maxRuns) -> Promise<Float64Array>; see extent-map.cc.
Napi::Value ExtentMap(const Napi::CallbackInfo& info);
// extentMapSync(fd, start, end, maxRuns) -> Float64Array; the same on the calling thread.
Napi::Value ExtentMapSync(const Napi::CallbackInfo& info);

}  // namespace raftblock
