// raftblock_io: io_uring with O_DIRECT and RWF_DSYNC, aligned slabs, lseek, extent maps (FIEMAP). See src/io/native.ts.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <napi.h>
#include <unistd.h>

#include "extent-map.h"
#include "ring.h"
#include "sys.h"

namespace raftblock {

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Ring", Ring::Define(env));
  exports.Set("allocAligned", Napi::Function::New(env, AllocAligned, "allocAligned"));
  exports.Set("lseek", Napi::Function::New(env, Lseek, "lseek"));
  exports.Set("extentMap", Napi::Function::New(env, ExtentMap, "extentMap"));
  exports.Set("extentMapSync", Napi::Function::New(env, ExtentMapSync, "extentMapSync"));
  exports.Set("crc32c", Napi::Function::New(env, Crc32c, "crc32c"));
  exports.Set("hasHardwareCrc32c", Napi::Boolean::New(env, HasHardwareCrc32c()));
  Napi::Object c = Napi::Object::New(env);
  c.Set("RWF_DSYNC", Napi::Number::New(env, RWF_DSYNC));
  c.Set("O_DIRECT", Napi::Number::New(env, O_DIRECT));
  c.Set("SEEK_DATA", Napi::Number::New(env, SEEK_DATA));
  c.Set("SEEK_HOLE", Napi::Number::New(env, SEEK_HOLE));
  c.Set("FALLOC_FL_KEEP_SIZE", Napi::Number::New(env, FALLOC_FL_KEEP_SIZE));
  c.Set("FALLOC_FL_PUNCH_HOLE", Napi::Number::New(env, FALLOC_FL_PUNCH_HOLE));
  c.Set("FALLOC_FL_ZERO_RANGE", Napi::Number::New(env, FALLOC_FL_ZERO_RANGE));
  exports.Set("constants", c);
  return exports;
}

}  // namespace raftblock

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return raftblock::Init(env, exports); }

NODE_API_MODULE(raftblock_io, InitModule)
