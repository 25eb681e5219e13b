// The OS side of the user client, behind one interface: IOKit + PF_SYSTEM on
// macOS (transport_macos.cpp), the emulator's endpoints on Linux
// (transport_linux.cpp). Everything above this file (the ObjectWraps, the
// reader threads) is platform independent.
#pragma once

#include <nke/nke_abi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

namespace nke {

// Why an open or a call failed, in terms a user can act on. `code` becomes
// the JS error's `code` property.
class TransportError : public std::runtime_error {
 public:
  TransportError(std::string code, const std::string &message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string &code() const { return code_; }

 private:
  std::string code_;
};

// Name of an nke_error value ("NKE_ERR_VERSION"), and what it means.
const char *ErrorName(uint32_t err);
const char *ErrorMeaning(uint32_t err);

enum class WaitResult {
  kData,     // the queue may hold entries: drain it until empty
  kTimeout,  // nothing happened; the caller checks its stop flag
  kAborted,  // Wake() was called
  kGone      // the filter (kext or emulator) went away
};

// One open user client. Thread use: Call() is serialized internally and may
// be called from any thread; WaitForData() is called by the reader thread
// only; Wake() from any thread.
class FilterTransport {
 public:
  virtual ~FilterTransport() = default;
  // Connects, maps the shared memory and performs NKE_SEL_OPEN. Throws
  // TransportError naming the cause (not loaded / not running / not
  // permitted / version mismatch / busy).
  virtual nke_open_reply Open() = 0;
  // Queue memory (nke_dq_memory at offset 0) and its trusted data size.
  virtual nke_dq_memory *Queue() = 0;
  virtual uint32_t QueueDataSize() const = 0;
  // NKE_BUFFER_COUNT * NKE_BUFFER_SIZE bytes, read-only.
  virtual const uint8_t *Buffers() const = 0;
  // One selector call. Returns the filter's nke_error (NKE_OK on success)
  // and fills out[0..*outlen); throws TransportError when the transport
  // itself failed (filter gone).
  virtual uint32_t Call(uint32_t selector, const void *in, size_t inlen, void *out,
                        size_t *outlen) = 0;
  // A call whose answer nobody needs (the reader thread's buffer releases:
  // a refusal changes nothing, the filter's deadlines release anyway). May
  // return before the filter answered; a later Call() still gets its own
  // reply. Default: a plain Call() (the kext's call is synchronous and
  // cheap). Throws TransportError like Call().
  virtual void Post(uint32_t selector, const void *in, size_t inlen) {
    (void)Call(selector, in, inlen, nullptr, nullptr);
  }
  virtual WaitResult WaitForData(int timeout_ms) = 0;
  virtual void Wake() = 0;
  // Unmaps and closes; the filter then releases every held chunk. Idempotent.
  virtual void Close() = 0;
};

std::unique_ptr<FilterTransport> MakeFilterTransport();

// A kernel-event socket filtered on one vendor/class/subclass.
class KevTransport {
 public:
  virtual ~KevTransport() = default;
  struct Opened {
    uint32_t vendor_code;
    uint32_t msg_limit;
  };
  // Looks the vendor up and installs the filter. Throws TransportError
  // (vendor not registered = kext not loaded / emulator not running).
  virtual Opened Open(const std::string &vendor, uint32_t kev_class, uint32_t kev_subclass) = 0;
  // Receives one kern_event_msg into buf. Returns its length, 0 on timeout,
  // -1 when aborted by Wake(). Throws TransportError when the source is gone.
  virtual long Receive(void *buf, size_t cap, int timeout_ms) = 0;
  virtual void Wake() = 0;
  virtual void Close() = 0;
};

std::unique_ptr<KevTransport> MakeKevTransport();

// Stops a reader thread that feeds JS through a thread-safe function, for
// FilterClient and KevSocket alike. The order matters: wake the thread out of
// its wait, Abort the TSFN so a reader blocked in BlockingCall (JS behind)
// returns at once instead of waiting for this very thread to drain the queue,
// join, and only then close the transport the thread was reading.
template <typename Transport, typename Tsfn>
void StopReader(std::unique_ptr<Transport> &transport, std::atomic<bool> &stop, Tsfn &tsfn,
                std::thread &reader) {
  if (!transport) return;
  stop = true;
  transport->Wake();
  tsfn.Abort();
  if (reader.joinable()) reader.join();
  transport->Close();
  transport.reset();
}

}  // namespace nke
