// CaptureSpill: see capture_spill.h.
#include "capture_spill.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace nke {

CaptureSpill::CaptureSpill(int fd, uint64_t size, uint64_t head) : size_(size), head_(head) {
  if (fd >= 0 && size > 0) fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

CaptureSpill::~CaptureSpill() {
  if (fd_ >= 0) close(fd_);
}

std::string CaptureSpill::last_error() const {
  std::lock_guard<std::mutex> g(error_mu_);
  return last_error_;
}

// One piece at a logical position: split where the ring wraps.
bool CaptureSpill::WriteAt(uint64_t logical, const uint8_t *p, size_t n) {
  while (n > 0) {
    uint64_t at = logical % size_;
    size_t take = size_t(std::min<uint64_t>(n, size_ - at));
    ssize_t w = pwrite(fd_, p, take, off_t(at));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = w < 0 ? errno : ENOSPC;
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard<std::mutex> g(error_mu_);
      last_error_ = std::string("writing the capture history file failed: ") + strerror(err);
      return false;
    }
    p += w;
    n -= size_t(w);
    logical += uint64_t(w);
  }
  return true;
}

int64_t CaptureSpill::Write(const Piece *pieces, size_t count) {
  if (fd_ < 0) return -1;
  uint64_t n = 0;
  for (size_t i = 0; i < count; i++) n += pieces[i].len;
  if (n > size_) return -1;  // would overwrite itself: not kept
  uint64_t start;
  {
    // Reserve first, write after: a reader that sees Head() <= L + size
    // after reading [L, L + n) knows no write touched it meanwhile.
    std::lock_guard<std::mutex> g(reserve_mu_);
    start = head_.load(std::memory_order_relaxed);
    head_.store(start + n, std::memory_order_release);
  }
  uint64_t at = start;
  for (size_t i = 0; i < count; i++) {
    if (!WriteAt(at, pieces[i].bytes, pieces[i].len)) return -1;
    at += pieces[i].len;
  }
  return int64_t(start);
}

}  // namespace nke
