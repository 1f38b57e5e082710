// Errors thrown to JS carry `errno` (positive) and `syscall`, so src/io can build IoError.
#pragma once
#include <napi.h>

namespace raftblock {

// A JS Error with errno/syscall/code set (for a promise to reject with).
Napi::Error ErrnoError(Napi::Env env, const char* syscall, int err);

// Throws ErrnoError; callers return right after.
void ThrowErrno(Napi::Env env, const char* syscall, int err);

}  // namespace raftblock
