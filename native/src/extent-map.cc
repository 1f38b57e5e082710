// extentMap: a file's allocation over a range (SEEK_DATA/SEEK_HOLE and FIEMAP), asked on a
// libuv pool thread. Both calls are cheap on an idle file, but on ext4 they wait for a punch
// or a zero of the same file (i_rwsem), which can take seconds for gigabytes: asked on the JS
// thread, that wait stalled every client of the process.
#include <errno.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "errors.h"
#include "extent-map.h"

namespace raftblock {
namespace {

// Run kinds as src/io/types.ts ExtentKind numbers them.
constexpr double kData = 0;
constexpr double kHole = 1;
constexpr double kUnwritten = 2;

// Most runs one answer may hold, whatever is asked: 3 doubles each, 384 MiB at this bound.
constexpr int64_t kMaxRuns = int64_t{1} << 24;
// Extents one FIEMAP call maps (the buffer is one header and this many extents, 3.6 KiB).
constexpr uint32_t kExtentsPerCall = 64;

// The file's unwritten extents (FIEMAP_EXTENT_UNWRITTEN: a FALLOC_FL_ZERO_RANGE's, a
// preallocation's), read a call at a time as the walk reaches them: FIEMAP is asked over the
// rest of the request's range, not once per hole, and never about a part the walk skips (a
// long run of data between two holes costs no call).
class UnwrittenCursor {
 public:
  UnwrittenCursor(int fd, uint64_t stop)
      : fd_(fd), stop_(stop), buf_(sizeof(struct fiemap) + kExtentsPerCall * sizeof(struct fiemap_extent)) {}

  // The first unwritten range that ends after `at` and starts before `to`, clipped to
  // [at, to), into *from and *until; false when there is none (or a call failed: err()).
  // Calls come with `at` never going back.
  bool Next(uint64_t at, uint64_t to, uint64_t* from, uint64_t* until) {
    for (;;) {
      while (!ranges_.empty() && ranges_.front().second <= at) ranges_.pop_front();
      if (!ranges_.empty()) {
        const std::pair<uint64_t, uint64_t>& r = ranges_.front();
        if (r.first >= to) return false;
        // An extent that ends where the calls so far ended may go on in the next one.
        if (r.second >= known_ && r.second < to && !exhausted_) {
          if (!Fill(at)) return false;
          continue;
        }
        *from = std::max(r.first, at);
        *until = std::min(r.second, to);
        return true;
      }
      if (exhausted_ || known_ >= to) return false;
      if (!Fill(at)) return false;
    }
  }

  int err() const { return err_; }

 private:
  // One FIEMAP call from max(known_, at); merges its unwritten extents into ranges_.
  bool Fill(uint64_t at) {
    const uint64_t pos = std::max(known_, at);
    if (pos >= stop_) {
      exhausted_ = true;
      known_ = stop_;
      return true;
    }
    // The header is the input (the kernel fills the extents it maps, up to the count).
    memset(buf_.data(), 0, sizeof(struct fiemap));
    auto* fm = reinterpret_cast<struct fiemap*>(buf_.data());
    fm->fm_start = pos;
    fm->fm_length = stop_ - pos;
    fm->fm_extent_count = kExtentsPerCall;
    if (ioctl(fd_, FS_IOC_FIEMAP, fm) < 0) {
      // No FIEMAP here: no unwritten extents to tell, SEEK_DATA's holes stay holes.
      if (errno == EOPNOTSUPP || errno == ENOTTY) {
        exhausted_ = true;
        known_ = stop_;
        return true;
      }
      err_ = errno;
      return false;
    }
    uint64_t next = pos;
    bool last = fm->fm_mapped_extents < kExtentsPerCall;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
      const struct fiemap_extent& e = fm->fm_extents[i];
      const uint64_t end = std::min<uint64_t>(e.fe_logical + e.fe_length, stop_);
      next = std::max<uint64_t>(next, e.fe_logical + e.fe_length);
      if ((e.fe_flags & FIEMAP_EXTENT_LAST) != 0) last = true;
      if ((e.fe_flags & FIEMAP_EXTENT_UNWRITTEN) == 0) continue;
      // Never before what earlier calls reported (the file may change between two calls).
      uint64_t begin = e.fe_logical;
      if (!ranges_.empty()) begin = std::max(begin, ranges_.back().second);
      if (begin >= end) continue;
      if (!ranges_.empty() && ranges_.back().second == begin) {
        ranges_.back().second = end;
      } else {
        ranges_.emplace_back(begin, end);
      }
    }
    if (last || next <= pos) {
      exhausted_ = true;
      known_ = stop_;
    } else {
      known_ = std::min(next, stop_);
      if (known_ >= stop_) exhausted_ = true;
    }
    return true;
  }

  const int fd_;
  const uint64_t stop_;
  std::vector<uint8_t> buf_;
  // Unwritten ranges read and not yet passed, ascending, disjoint, neighbours merged.
  std::deque<std::pair<uint64_t, uint64_t>> ranges_;
  // Every extent below this has been read.
  uint64_t known_ = 0;
  bool exhausted_ = false;
  int err_ = 0;
};

// The walk over [start, end): SEEK_DATA/SEEK_HOLE, and FIEMAP within their holes. Touches no JS
// (it runs on a pool thread for extentMap).
class ExtentWalk {
 public:
  ExtentWalk(int fd, uint64_t start, uint64_t end, size_t maxRuns) : fd_(fd), start_(start), end_(end), maxRuns_(maxRuns) {}

  void Run() {
    UnwrittenCursor unwritten(fd_, end_);
    uint64_t pos = start_;
    while (pos < end_) {
      off_t d = lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
      if (d < 0 && errno != ENXIO) return Fail("lseek", errno);
      const uint64_t holeEnd = d < 0 || static_cast<uint64_t>(d) >= end_ ? end_ : static_cast<uint64_t>(d);
      if (holeEnd > pos) {
        // SEEK_DATA's holes include unwritten extents: allocated, read as zeros.
        uint64_t at = pos;
        uint64_t from = 0;
        uint64_t until = 0;
        while (unwritten.Next(at, holeEnd, &from, &until)) {
          if (!Add(kHole, at, from) || !Add(kUnwritten, from, until)) return;
          at = until;
        }
        if (unwritten.err() != 0) return Fail("ioctl(FS_IOC_FIEMAP)", unwritten.err());
        if (!Add(kHole, at, holeEnd)) return;
        pos = holeEnd;
        continue;
      }
      off_t h = lseek(fd_, static_cast<off_t>(pos), SEEK_HOLE);
      if (h < 0 && errno != ENXIO) return Fail("lseek", errno);
      // Truncated (ENXIO) or punched at pos between the two calls: look again from pos.
      if (h < 0 || static_cast<uint64_t>(h) <= pos) continue;
      const uint64_t dataEnd = std::min<uint64_t>(static_cast<uint64_t>(h), end_);
      if (!Add(kData, pos, dataEnd)) return;
      pos = dataEnd;
    }
  }

  // The runs; after a failed call its error instead, thrown (then undefined) or returned.
  Napi::Value Result(Napi::Env env, bool throwError) const {
    if (errno_ != 0) {
      Napi::Error e = ErrnoError(env, syscall_, errno_);
      if (throwError) e.ThrowAsJavaScriptException();
      return throwError ? env.Undefined() : e.Value();
    }
    Napi::Float64Array arr = Napi::Float64Array::New(env, runs_.size());
    if (!runs_.empty()) memcpy(arr.Data(), runs_.data(), runs_.size() * sizeof(double));
    return arr;
  }

  bool failed() const { return errno_ != 0; }

 private:
  // Appends [from, to) of `kind`, joined to the last run when of the same kind. False once the
  // answer holds maxRuns_ runs: what follows was not looked at.
  bool Add(double kind, uint64_t from, uint64_t to) {
    if (to <= from) return true;
    const size_t n = runs_.size();
    if (n != 0 && runs_[n - 1] == kind && runs_[n - 2] == static_cast<double>(from)) {
      runs_[n - 2] = static_cast<double>(to);
      return true;
    }
    if (n / 3 >= maxRuns_) return false;
    runs_.push_back(static_cast<double>(from));
    runs_.push_back(static_cast<double>(to));
    runs_.push_back(kind);
    return true;
  }

  void Fail(const char* syscall, int err) {
    syscall_ = syscall;
    errno_ = err;
  }

  const int fd_;
  const uint64_t start_;
  const uint64_t end_;
  const size_t maxRuns_;
  // [from, to, kind] triples, in order, each touching the next.
  std::vector<double> runs_;
  const char* syscall_ = nullptr;
  int errno_ = 0;
};

class ExtentMapWorker : public Napi::AsyncWorker {
 public:
  ExtentMapWorker(Napi::Env env, ExtentWalk walk)
      : Napi::AsyncWorker(env, "raftblock:extentMap"), deferred_(Napi::Promise::Deferred::New(env)), walk_(std::move(walk)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override { walk_.Run(); }

  void OnOK() override {
    Napi::Value v = walk_.Result(Env(), false);
    if (walk_.failed()) deferred_.Reject(v);
    else deferred_.Resolve(v);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  ExtentWalk walk_;
};

// The arguments of extentMap and extentMapSync as a walk; none with an exception pending.
std::optional<ExtentWalk> ParseArgs(const Napi::CallbackInfo& info, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber()) {
    Napi::TypeError::New(env, std::string(name) + "(fd, start, end, maxRuns)").ThrowAsJavaScriptException();
    return std::nullopt;
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t start = info[1].As<Napi::Number>().Int64Value();
  int64_t end = info[2].As<Napi::Number>().Int64Value();
  int64_t maxRuns = info[3].As<Napi::Number>().Int64Value();
  if (fd < 0 || start < 0 || end < start || maxRuns < 1) {
    Napi::RangeError::New(env, std::string(name) + ": need fd >= 0, 0 <= start <= end and maxRuns >= 1").ThrowAsJavaScriptException();
    return std::nullopt;
  }
  return ExtentWalk(fd, static_cast<uint64_t>(start), static_cast<uint64_t>(end), static_cast<size_t>(std::min(maxRuns, kMaxRuns)));
}

}  // namespace

// extentMap(fd, start, end, maxRuns) -> Promise<Float64Array> of [from, to, kind] triples: the
// runs of [start, end) from start on, in order, each touching the next: data (what SEEK_DATA
// finds), holes (SEEK_HOLE's), and within holes the unwritten extents (FIEMAP), which SEEK_DATA
// counts as holes although they are allocated. Neighbouring runs of a kind are one. At most
// maxRuns: with that many the runs may end before `end` (past them, not looked at: a client can
// make a file of millions). Rejected with errno/syscall set when a call fails. Walked on a libuv
// pool thread: the caller keeps fd open until the promise settles.
Napi::Value ExtentMap(const Napi::CallbackInfo& info) {
  std::optional<ExtentWalk> walk = ParseArgs(info, "extentMap");
  if (!walk) return info.Env().Undefined();
  auto* worker = new ExtentMapWorker(info.Env(), std::move(*walk));
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself once settled
  return promise;
}

// extentMapSync(fd, start, end, maxRuns) -> Float64Array: the same walk on the calling thread
// (throws with errno/syscall set), for a caller that blocks on the file anyway.
Napi::Value ExtentMapSync(const Napi::CallbackInfo& info) {
  std::optional<ExtentWalk> walk = ParseArgs(info, "extentMapSync");
  if (!walk) return info.Env().Undefined();
  walk->Run();
  return walk->Result(info.Env(), true);
}

}  // namespace raftblock
