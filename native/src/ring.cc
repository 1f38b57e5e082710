#include "ring.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "errors.h"

namespace raftblock {

Napi::Function Ring::Define(Napi::Env env) {
  return DefineClass(env, "Ring",
                     {
                         InstanceMethod<&Ring::PrepRead>("prepRead"),
                         InstanceMethod<&Ring::PrepWrite>("prepWrite"),
                         InstanceMethod<&Ring::PrepWritev>("prepWritev"),
                         InstanceMethod<&Ring::PrepFsync>("prepFsync"),
                         InstanceMethod<&Ring::PrepFallocate>("prepFallocate"),
                         InstanceMethod<&Ring::Submit>("submit"),
                         InstanceMethod<&Ring::Close>("close"),
                         InstanceAccessor<&Ring::InFlight>("inFlight"),
                     });
}

// new Ring(entries, completions: Int32Array(2 * 2 * entries), onComplete(count))
Ring::Ring(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Ring>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsTypedArray() || !info[2].IsFunction()) {
    Napi::TypeError::New(env, "new Ring(entries, completions: Int32Array, onComplete)").ThrowAsJavaScriptException();
    return;
  }
  uint32_t entries = info[0].As<Napi::Number>().Uint32Value();
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (entries == 0 || entries > 4096 || ta.TypedArrayType() != napi_int32_array) {
    Napi::RangeError::New(env, "Ring: 1..4096 entries and an Int32Array").ThrowAsJavaScriptException();
    return;
  }
  Napi::Int32Array completions = ta.As<Napi::Int32Array>();

  io_uring_params params;
  memset(&params, 0, sizeof params);
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = entries * 2;
  int rc = io_uring_queue_init_params(entries, &ring_, &params);
  if (rc < 0) {
    ThrowErrno(env, "io_uring_setup", -rc);
    return;
  }
  ringReady_ = true;
  slots_ = params.cq_entries;
  if (completions.ElementLength() < size_t(slots_) * 2) {
    Destroy();
    Napi::RangeError::New(env, "Ring: completions must hold 2 * cq_entries int32").ThrowAsJavaScriptException();
    return;
  }
  eventFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (eventFd_ < 0) {
    int err = errno;
    Destroy();
    ThrowErrno(env, "eventfd", err);
    return;
  }
  rc = io_uring_register_eventfd(&ring_, eventFd_);
  if (rc < 0) {
    Destroy();
    ThrowErrno(env, "io_uring_register_eventfd", -rc);
    return;
  }
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  poll_ = new uv_poll_t;
  uv_poll_init(loop, poll_, eventFd_);
  poll_->data = this;
  uv_poll_start(poll_, UV_READABLE, OnPoll);
  uv_unref(reinterpret_cast<uv_handle_t*>(poll_));  // idle rings never hold the loop open

  completions_ = completions.Data();
  completionsRef_ = Napi::Reference<Napi::Int32Array>::New(completions, 1);
  onComplete_ = Napi::Persistent(info[2].As<Napi::Function>());
  asyncContext_ = new Napi::AsyncContext(env, "raftblock:io_uring");
  iovecs_.resize(slots_);
  napi_add_env_cleanup_hook(env, OnEnvTeardown, this);
}

Ring::~Ring() { Destroy(); }

void Ring::OnEnvTeardown(void* arg) {
  Ring* ring = static_cast<Ring*>(arg);
  ring->hookRan_ = true;  // Node is running its hooks: do not remove ours from under it
  ring->Destroy();
}

void Ring::Destroy() {
  if (destroyed_) return;
  destroyed_ = true;
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  if (ringReady_) {
    // io_uring_queue_exit waits for nothing; the kernel cancels what is left. We only get here
    // with work in flight at environment teardown, when no JS will look at the buffers again.
    io_uring_queue_exit(&ring_);
    ringReady_ = false;
  }
  if (eventFd_ >= 0) {
    close(eventFd_);
    eventFd_ = -1;
  }
  if (asyncContext_ != nullptr) {
    delete asyncContext_;
    asyncContext_ = nullptr;
  }
  if (env_ != nullptr && completions_ != nullptr && !hookRan_) napi_remove_env_cleanup_hook(env_, OnEnvTeardown, this);
  completions_ = nullptr;
}

io_uring_sqe* Ring::NextSqe(Napi::Env env, uint32_t token) {
  if (destroyed_ || closing_) {
    Napi::Error::New(env, "io_uring ring is closed").ThrowAsJavaScriptException();
    return nullptr;
  }
  if (token >= slots_) {
    Napi::RangeError::New(env, "token out of range").ThrowAsJavaScriptException();
    return nullptr;
  }
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe != nullptr) Started();
  return sqe;
}

void Ring::Started() {
  if (inFlight_++ == 0) {
    uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    // The JS object (and so the owners of the buffers) stays alive while the kernel works.
    if (unrefPending_) unrefPending_ = false;  // still held from the previous burst
    else Ref();
  }
}

void Ring::Finished(uint32_t count) {
  inFlight_ -= count;
  if (inFlight_ == 0) {
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    // Dropped after the JS callback returns: the object must outlive this Drain().
    unrefPending_ = true;
  }
}

static bool ArgsOk(const Napi::CallbackInfo& info, size_t n) {
  if (info.Length() < n) return false;
  for (size_t i = 0; i < n; i++) {
    if (!info[i].IsNumber() && !info[i].IsBuffer() && !info[i].IsArray() && !info[i].IsBoolean()) return false;
  }
  return true;
}

static Napi::Value BadArgs(Napi::Env env, const char* usage) {
  Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
  return env.Undefined();
}

// prepRead(token, fd, buf, offset) -> queued?
Napi::Value Ring::PrepRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ArgsOk(info, 4) || !info[2].IsBuffer()) return BadArgs(env, "prepRead(token, fd, buf, offset)");
  uint32_t token = info[0].As<Napi::Number>().Uint32Value();
  Napi::Buffer<uint8_t> buf = info[2].As<Napi::Buffer<uint8_t>>();
  io_uring_sqe* sqe = NextSqe(env, token);
  if (sqe == nullptr) return env.IsExceptionPending() ? env.Undefined() : Napi::Boolean::New(env, false);
  io_uring_prep_read(sqe, info[1].As<Napi::Number>().Int32Value(), buf.Data(), static_cast<unsigned>(buf.Length()),
                     static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value()));
  io_uring_sqe_set_data64(sqe, token);
  return Napi::Boolean::New(env, true);
}

// prepWrite(token, fd, buf, offset, rwFlags) -> queued?
Napi::Value Ring::PrepWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ArgsOk(info, 5) || !info[2].IsBuffer()) return BadArgs(env, "prepWrite(token, fd, buf, offset, rwFlags)");
  uint32_t token = info[0].As<Napi::Number>().Uint32Value();
  Napi::Buffer<uint8_t> buf = info[2].As<Napi::Buffer<uint8_t>>();
  io_uring_sqe* sqe = NextSqe(env, token);
  if (sqe == nullptr) return env.IsExceptionPending() ? env.Undefined() : Napi::Boolean::New(env, false);
  io_uring_prep_write(sqe, info[1].As<Napi::Number>().Int32Value(), buf.Data(), static_cast<unsigned>(buf.Length()),
                      static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value()));
  sqe->rw_flags = info[4].As<Napi::Number>().Int32Value();
  io_uring_sqe_set_data64(sqe, token);
  return Napi::Boolean::New(env, true);
}

// prepWritev(token, fd, bufs[], offset, rwFlags) -> queued?
Napi::Value Ring::PrepWritev(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ArgsOk(info, 5) || !info[2].IsArray()) return BadArgs(env, "prepWritev(token, fd, bufs, offset, rwFlags)");
  uint32_t token = info[0].As<Napi::Number>().Uint32Value();
  if (token >= slots_) return BadArgs(env, "token out of range");
  Napi::Array bufs = info[2].As<Napi::Array>();
  uint32_t n = bufs.Length();
  if (n == 0 || n > IOV_MAX) return BadArgs(env, "prepWritev: 1..IOV_MAX buffers");
  std::vector<iovec>& iov = iovecs_[token];  // lives until the completion: the kernel may read it late
  iov.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value v = bufs.Get(i);
    if (!v.IsBuffer()) return BadArgs(env, "prepWritev: every element must be a Buffer");
    Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
    iov[i].iov_base = b.Data();
    iov[i].iov_len = b.Length();
  }
  io_uring_sqe* sqe = NextSqe(env, token);
  if (sqe == nullptr) return env.IsExceptionPending() ? env.Undefined() : Napi::Boolean::New(env, false);
  io_uring_prep_writev(sqe, info[1].As<Napi::Number>().Int32Value(), iov.data(), n,
                       static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value()));
  sqe->rw_flags = info[4].As<Napi::Number>().Int32Value();
  io_uring_sqe_set_data64(sqe, token);
  return Napi::Boolean::New(env, true);
}

// prepFsync(token, fd, datasync) -> queued?
Napi::Value Ring::PrepFsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ArgsOk(info, 3)) return BadArgs(env, "prepFsync(token, fd, datasync)");
  uint32_t token = info[0].As<Napi::Number>().Uint32Value();
  io_uring_sqe* sqe = NextSqe(env, token);
  if (sqe == nullptr) return env.IsExceptionPending() ? env.Undefined() : Napi::Boolean::New(env, false);
  io_uring_prep_fsync(sqe, info[1].As<Napi::Number>().Int32Value(),
                      info[2].ToBoolean().Value() ? IORING_FSYNC_DATASYNC : 0);
  io_uring_sqe_set_data64(sqe, token);
  return Napi::Boolean::New(env, true);
}

// prepFallocate(token, fd, mode, offset, length) -> queued?
Napi::Value Ring::PrepFallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ArgsOk(info, 5)) return BadArgs(env, "prepFallocate(token, fd, mode, offset, length)");
  uint32_t token = info[0].As<Napi::Number>().Uint32Value();
  io_uring_sqe* sqe = NextSqe(env, token);
  if (sqe == nullptr) return env.IsExceptionPending() ? env.Undefined() : Napi::Boolean::New(env, false);
  io_uring_prep_fallocate(sqe, info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::Number>().Int32Value(),
                          static_cast<off_t>(info[3].As<Napi::Number>().Int64Value()),
                          static_cast<off_t>(info[4].As<Napi::Number>().Int64Value()));
  io_uring_sqe_set_data64(sqe, token);
  return Napi::Boolean::New(env, true);
}

// submit() -> SQEs handed to the kernel.
Napi::Value Ring::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (destroyed_) return Napi::Number::New(env, 0);
  int rc;
  do {
    rc = io_uring_submit(&ring_);
  } while (rc == -EINTR);
  if (rc < 0) {
    ThrowErrno(env, "io_uring_enter", -rc);
    return env.Undefined();
  }
  return Napi::Number::New(env, rc);
}

Napi::Value Ring::Close(const Napi::CallbackInfo& info) {
  closing_ = true;
  if (inFlight_ == 0) Destroy();
  return info.Env().Undefined();
}

Napi::Value Ring::InFlight(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), inFlight_); }

void Ring::OnPoll(uv_poll_t* handle, int status, int events) {
  static_cast<Ring*>(handle->data)->Drain();
}

// Runs on the JS thread: clear the eventfd, move every CQE into the shared array, call JS once
// per full array. Completions are marked seen before JS runs, so JS may submit more at once.
void Ring::Drain() {
  if (destroyed_) return;
  // One read takes the whole count and zeroes it (no EFD_SEMAPHORE), so a second read would
  // only fail with EAGAIN: a wasted system call per wake-up, one per WAL write at QD1. A
  // completion posted after this read counts the eventfd up again and wakes the poll once
  // more; that Drain finds the CQEs taken already, or takes them.
  uint64_t ignored;
  (void)!read(eventFd_, &ignored, sizeof ignored);
  Napi::Env env(env_);
  Napi::HandleScope scope(env);
  for (;;) {
    uint32_t count = 0;
    io_uring_cqe* cqe;
    unsigned head;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      completions_[2 * count] = static_cast<int32_t>(io_uring_cqe_get_data64(cqe));
      completions_[2 * count + 1] = cqe->res;
      if (++count == slots_) break;
    }
    if (count == 0) break;
    io_uring_cq_advance(&ring_, count);
    Finished(count);
    Napi::Value recv = Value();
    onComplete_.MakeCallback(recv.IsEmpty() ? env.Undefined() : recv, {Napi::Number::New(env, count)}, *asyncContext_);
    if (env.IsExceptionPending()) {
      // Nothing in JS is below us to catch it: report it as uncaught, like any callback would.
      Napi::Error e = env.GetAndClearPendingException();
      napi_fatal_exception(env, e.Value());
    }
    if (destroyed_) break;
  }
  if (closing_ && inFlight_ == 0) Destroy();
  if (unrefPending_) {
    unrefPending_ = false;
    Unref();  // may let the object be collected: nothing touches `this` afterwards
  }
}

}  // namespace raftblock
