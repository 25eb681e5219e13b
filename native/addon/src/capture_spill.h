// CaptureSpill: the capture history's byte store, a file used as a ring.
//
// The helper's capture history (extension/src/helper/captureHistory.ts)
// keeps the payload bytes of every chunk the filter reported or held. They go
// to a file, never to memory: the reader thread writes each chunk straight
// from the shared buffers (before it releases them) with pwrite, and JS only
// keeps an index of where each chunk's bytes are.
//
// Positions are logical and only grow: a byte at logical position L lives at
// file offset L % size, so the newest `size` bytes are kept and the oldest go
// first. A range [L, L + n) is intact as long as Head() <= L + size: every
// write first reserves its range (moving the head under the mutex), then
// writes outside it, so a reader that checks Head() after reading knows
// whether anything overwrote what it read.
//
// Thread use: Write() from the reader thread and the JS thread alike.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace nke {

class CaptureSpill {
 public:
  // fd: an open read-write file (dup'ed here; the caller keeps its own);
  // size: ring bytes (> 0); head: the logical position to continue from.
  CaptureSpill(int fd, uint64_t size, uint64_t head);
  ~CaptureSpill();
  CaptureSpill(const CaptureSpill &) = delete;
  CaptureSpill &operator=(const CaptureSpill &) = delete;

  bool ok() const { return fd_ >= 0; }
  uint64_t size() const { return size_; }
  // Logical position of the next byte to be written (reservations included).
  uint64_t Head() const { return head_.load(std::memory_order_acquire); }

  // Writes the n bytes of `count` pieces as one logical range. Returns its
  // logical start, or -1 (nothing kept: a write failed, or n > size).
  struct Piece {
    const uint8_t *bytes;
    size_t len;
  };
  int64_t Write(const Piece *pieces, size_t count);

  uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }
  // The last write error, as text (empty when none).
  std::string last_error() const;

 private:
  bool WriteAt(uint64_t logical, const uint8_t *p, size_t n);

  int fd_ = -1;
  const uint64_t size_;
  std::mutex reserve_mu_;           // orders reservations of head_
  std::atomic<uint64_t> head_;      // written under reserve_mu_, read anywhere
  std::atomic<uint64_t> write_errors_{0};
  mutable std::mutex error_mu_;     // guards last_error_
  std::string last_error_;
};

}  // namespace nke
