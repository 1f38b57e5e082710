// Errors thrown to JS carry `errno` (positive) and `syscall`, so src/io can build IoError.
#pragma once
#include <napi.h>

namespace raftblock {

// Throws a JS Error with errno/syscall/code set; callers return right after.
void ThrowErrno(Napi::Env env, const char* syscall, int err);

}  // namespace raftblock
