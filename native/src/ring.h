// One io_uring instance driven from the JS thread.
//
// Submissions: the prep* methods fill SQEs (user_data = a token chosen by JS); submit() hands
// them all to the kernel in one io_uring_submit (JS calls it once per turn).
// Completions: the ring signals an eventfd; a uv_poll on it runs on the JS thread, drains every
// CQE into a shared Int32Array of (token, res) pairs and calls the JS callback once per batch.
// Lifetime: while operations are in flight the poll handle is ref'd (keeps the loop alive) and
// the JS object is strongly referenced (the kernel may still write into buffers it owns);
// close() defers teardown until the last completion has been delivered.
#pragma once
#include <liburing.h>
#include <napi.h>
#include <sys/uio.h>
#include <uv.h>

#include <vector>

namespace raftblock {

class Ring : public Napi::ObjectWrap<Ring> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Ring(const Napi::CallbackInfo& info);
  ~Ring() override;

 private:
  Napi::Value PrepRead(const Napi::CallbackInfo& info);
  Napi::Value PrepWrite(const Napi::CallbackInfo& info);
  Napi::Value PrepWritev(const Napi::CallbackInfo& info);
  Napi::Value PrepFsync(const Napi::CallbackInfo& info);
  Napi::Value PrepFallocate(const Napi::CallbackInfo& info);
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value InFlight(const Napi::CallbackInfo& info);

  // Returns the next SQE for `token`, or nullptr when the SQ is full (or the ring is closed,
  // in which case a JS exception is pending).
  io_uring_sqe* NextSqe(Napi::Env env, uint32_t token);
  void Started();
  void Finished(uint32_t count);
  void Drain();
  void Destroy();
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnEnvTeardown(void* arg);

  io_uring ring_{};
  bool ringReady_ = false;
  bool closing_ = false;
  bool destroyed_ = false;
  bool hookRan_ = false;
  bool unrefPending_ = false;
  int eventFd_ = -1;
  uv_poll_t* poll_ = nullptr;
  uint32_t slots_ = 0;
  uint32_t inFlight_ = 0;  // prepped and not yet delivered
  int32_t* completions_ = nullptr;
  Napi::Reference<Napi::Int32Array> completionsRef_;
  Napi::FunctionReference onComplete_;
  Napi::AsyncContext* asyncContext_ = nullptr;
  std::vector<std::vector<iovec>> iovecs_;  // per token, for writev; reused
  napi_env env_ = nullptr;
};

}  // namespace raftblock
