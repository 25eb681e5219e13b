// macOS transport: the kext's IOUserClient (IOKit) and a PF_SYSTEM event
// socket. Compile-checked on Linux against the macOS SDK (npm run check:macos).
//
// Error convention with kext/macos: a method that refuses a message returns
// iokit_vendor_specific_err(nke_error) (the ABI's distinct error in the low
// bits); IOKit's own failures (kIOReturnNotPrivileged, ...) keep their usual
// meaning.
#include "transport.h"

#include <IOKit/IODataQueueClient.h>
#include <IOKit/IOKitLib.h>
#include <errno.h>
#include <mach/mach.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/kern_event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>

namespace nke {
namespace {

std::string Hex(kern_return_t kr) {
  char b[16];
  snprintf(b, sizeof(b), "0x%08x", unsigned(kr));
  return b;
}

// Maps an IOReturn from a method call to an nke_error, or throws for a
// transport failure (the user client is gone).
uint32_t ToNkeError(kern_return_t kr) {
  if (kr == kIOReturnSuccess) return NKE_OK;
  const kern_return_t vendor_base = iokit_vendor_specific_err(0);
  if ((kr & ~0x3fff) == vendor_base) return uint32_t(kr & 0x3fff);
  if (kr == kIOReturnNotPrivileged) return NKE_ERR_NOT_PERMITTED;
  if (kr == kIOReturnExclusiveAccess) return NKE_ERR_BUSY;
  if (kr == kIOReturnBadArgument) return NKE_ERR_SIZE;
  if (kr == kIOReturnUnsupported) return NKE_ERR_SELECTOR;
  if (kr == kIOReturnNoMemory) return NKE_ERR_NO_MEMORY;
  throw TransportError("NKE_GONE", "the kext's user client failed (IOReturn " + Hex(kr) +
                                       "): the kext was unloaded or the connection died");
}

class MacFilterTransport final : public FilterTransport {
 public:
  ~MacFilterTransport() override { Close(); }

  nke_open_reply Open() override {
    io_service_t service =
        IOServiceGetMatchingService(kIOMasterPortDefault, IOServiceMatching(NKE_SERVICE_CLASS));
    if (service == IO_OBJECT_NULL)
      throw TransportError("NKE_NOT_LOADED", "the NKE kext is not loaded (no " NKE_SERVICE_CLASS
                                             " service); load it with NKE: Load Filter");
    kern_return_t kr = IOServiceOpen(service, mach_task_self(), 0, &conn_);
    IOObjectRelease(service);
    if (kr == kIOReturnNotPrivileged)
      throw TransportError("NKE_NOT_PERMITTED",
                           "not permitted: the kext accepts administrator (root) clients only");
    if (kr == kIOReturnExclusiveAccess)
      throw TransportError("NKE_BUSY", "another client is already connected to the kext");
    if (kr != kIOReturnSuccess)
      throw TransportError("NKE_SYSTEM", "IOServiceOpen failed: IOReturn " + Hex(kr));

    nke_open_request req;
    memset(&req, 0, sizeof(req));
    req.abi_version = NKE_ABI_VERSION;
    req.client_pid = getpid();
    nke_open_reply reply;
    memset(&reply, 0, sizeof(reply));
    size_t outlen = sizeof(reply);
    uint32_t st = Call(NKE_SEL_OPEN, &req, sizeof(req), &reply, &outlen);
    if (st == NKE_ERR_VERSION)
      throw TransportError("NKE_VERSION", "ABI version mismatch: this addon speaks version " +
                                              std::to_string(NKE_ABI_VERSION) + ", the kext " +
                                              std::to_string(reply.abi_version) +
                                              "; rebuild and reload the kext from this tree");
    if (st == NKE_ERR_NOT_PERMITTED)
      throw TransportError("NKE_NOT_PERMITTED", "the kext refused this client (not root)");
    if (st != NKE_OK)
      throw TransportError(ErrorName(st), std::string("open refused: ") + ErrorMeaning(st));
    if (outlen != sizeof(reply) || reply.abi_version != NKE_ABI_VERSION ||
        reply.queue_data_size != NKE_QUEUE_DATA_SIZE || reply.buffer_count != NKE_BUFFER_COUNT ||
        reply.buffer_size != NKE_BUFFER_SIZE)
      throw TransportError("NKE_VERSION", "the kext's open reply does not match this ABI header");

    mach_vm_address_t addr = 0;
    mach_vm_size_t size = 0;
    kr = IOConnectMapMemory64(conn_, NKE_MEM_QUEUE, mach_task_self(), &addr, &size, kIOMapAnywhere);
    if (kr != kIOReturnSuccess || size < NKE_QUEUE_DATA_SIZE + NKE_DQ_MEMORY_HEADER_SIZE)
      throw TransportError("NKE_SYSTEM", "mapping the notification queue failed: " + Hex(kr));
    queue_ = reinterpret_cast<nke_dq_memory *>(addr);
    queue_size_ = size;
    addr = 0;
    size = 0;
    kr = IOConnectMapMemory64(conn_, NKE_MEM_BUFFER_POOL, mach_task_self(), &addr, &size,
                              kIOMapAnywhere | kIOMapReadOnly);
    if (kr != kIOReturnSuccess || size < mach_vm_size_t(NKE_BUFFER_COUNT) * NKE_BUFFER_SIZE)
      throw TransportError("NKE_SYSTEM", "mapping the data buffers failed: " + Hex(kr));
    buffers_ = reinterpret_cast<const uint8_t *>(addr);
    buffers_size_ = size;

    port_ = IODataQueueAllocateNotificationPort();
    if (port_ == MACH_PORT_NULL)
      throw TransportError("NKE_SYSTEM", "IODataQueueAllocateNotificationPort failed");
    kr = IOConnectSetNotificationPort(conn_, 0, port_, 0);
    if (kr != kIOReturnSuccess)
      throw TransportError("NKE_SYSTEM", "IOConnectSetNotificationPort failed: " + Hex(kr));
    return reply;
  }

  nke_dq_memory *Queue() override { return queue_; }
  uint32_t QueueDataSize() const override { return NKE_QUEUE_DATA_SIZE; }
  const uint8_t *Buffers() const override { return buffers_; }

  uint32_t Call(uint32_t selector, const void *in, size_t inlen, void *out,
                size_t *outlen) override {
    // IOConnectCallStructMethod is thread safe; the mutex only orders it
    // against Close() so a call never races the connection's teardown.
    std::lock_guard<std::mutex> lock(mutex_);
    if (conn_ == IO_OBJECT_NULL) throw TransportError("NKE_NOT_OPEN", "the filter client is closed");
    size_t dummy = 0;
    kern_return_t kr =
        IOConnectCallStructMethod(conn_, selector, in, inlen, out, outlen ? outlen : &dummy);
    return ToNkeError(kr);
  }

  WaitResult WaitForData(int timeout_ms) override {
    if (aborted_.exchange(false)) return WaitResult::kAborted;
    // The kext sends a bare mach message on empty -> non-empty. A receive
    // with a timeout (rather than IODataQueueWaitForAvailableData, which
    // blocks forever) lets Wake() stop the reader within timeout_ms.
    struct {
      mach_msg_header_t header;
      mach_msg_trailer_t trailer;
    } msg;
    memset(&msg, 0, sizeof(msg));
    kern_return_t kr = mach_msg(&msg.header, MACH_RCV_MSG | MACH_RCV_TIMEOUT, 0, sizeof(msg),
                                port_, mach_msg_timeout_t(timeout_ms), MACH_PORT_NULL);
    if (aborted_.exchange(false)) return WaitResult::kAborted;
    if (kr == MACH_MSG_SUCCESS) return WaitResult::kData;
    if (kr == MACH_RCV_TIMED_OUT) {
      // Still connected? A cheap call tells an unloaded kext from a quiet one.
      nke_filter_state st;
      size_t len = sizeof(st);
      try {
        Call(NKE_SEL_GET_STATE, nullptr, 0, &st, &len);
      } catch (const TransportError &) {
        return WaitResult::kGone;
      }
      return WaitResult::kTimeout;
    }
    if (kr == MACH_RCV_TOO_LARGE) return WaitResult::kData;
    return WaitResult::kGone;
  }

  void Wake() override { aborted_ = true; }

  void Close() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (conn_ != IO_OBJECT_NULL) {
      if (queue_)
        IOConnectUnmapMemory64(conn_, NKE_MEM_QUEUE, mach_task_self(),
                               reinterpret_cast<mach_vm_address_t>(queue_));
      if (buffers_)
        IOConnectUnmapMemory64(conn_, NKE_MEM_BUFFER_POOL, mach_task_self(),
                               reinterpret_cast<mach_vm_address_t>(buffers_));
      IOServiceClose(conn_);  // the kext's clientClose releases every held chunk
      conn_ = IO_OBJECT_NULL;
    }
    queue_ = nullptr;
    buffers_ = nullptr;
    if (port_ != MACH_PORT_NULL) {
      mach_port_destroy(mach_task_self(), port_);
      port_ = MACH_PORT_NULL;
    }
  }

 private:
  std::mutex mutex_;  // orders Call() against Close()
  io_connect_t conn_ = IO_OBJECT_NULL;
  nke_dq_memory *queue_ = nullptr;
  mach_vm_size_t queue_size_ = 0;
  const uint8_t *buffers_ = nullptr;
  mach_vm_size_t buffers_size_ = 0;
  mach_port_t port_ = MACH_PORT_NULL;
  std::atomic<bool> aborted_{false};
};

class MacKevTransport final : public KevTransport {
 public:
  ~MacKevTransport() override { Close(); }

  Opened Open(const std::string &vendor, uint32_t kev_class, uint32_t kev_subclass) override {
    if (vendor.empty() || vendor.size() >= KEV_VENDOR_CODE_MAX_STR_LEN)
      throw TransportError("NKE_BAD_VENDOR", "vendor string must be 1.." +
                                                 std::to_string(KEV_VENDOR_CODE_MAX_STR_LEN - 1) +
                                                 " bytes");
    fd_ = socket(PF_SYSTEM, SOCK_RAW, SYSPROTO_EVENT);
    if (fd_ < 0)
      throw TransportError("NKE_SYSTEM", std::string("socket(PF_SYSTEM): ") + strerror(errno));
    if (pipe(wake_) != 0)
      throw TransportError("NKE_SYSTEM", std::string("pipe: ") + strerror(errno));
    struct kev_vendor_code vc;
    memset(&vc, 0, sizeof(vc));
    memcpy(vc.vendor_string, vendor.data(), vendor.size());
    if (ioctl(fd_, SIOCGKEVVENDOR, &vc) != 0) {
      if (errno == ENOENT)
        throw TransportError("NKE_NOT_LOADED", "no kernel-event vendor \"" + vendor +
                                                   "\" registered: the NKE kext is not loaded");
      throw TransportError("NKE_SYSTEM", std::string("SIOCGKEVVENDOR: ") + strerror(errno));
    }
    struct kev_request req;
    req.vendor_code = vc.vendor_code;
    req.kev_class = kev_class;
    req.kev_subclass = kev_subclass;
    if (ioctl(fd_, SIOCSKEVFILT, &req) != 0)
      throw TransportError("NKE_SYSTEM", std::string("SIOCSKEVFILT: ") + strerror(errno));
    Opened o;
    o.vendor_code = vc.vendor_code;
#if defined(__arm64__) || defined(__aarch64__)
    o.msg_limit = NKE_KEV_MSG_LIMIT_ARM64;
#else
    o.msg_limit = NKE_KEV_MSG_LIMIT_X86_64;
#endif
    return o;
  }

  long Receive(void *buf, size_t cap, int timeout_ms) override {
    struct pollfd p[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int n = poll(p, 2, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) return 0;
      throw TransportError("NKE_SYSTEM", std::string("poll: ") + strerror(errno));
    }
    if (n == 0) return 0;
    if (p[1].revents & POLLIN) return -1;
    ssize_t r = recv(fd_, buf, cap, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (r <= 0) throw TransportError("NKE_GONE", "the event socket closed");
    return long(r);
  }

  void Wake() override {
    char c = 1;
    if (wake_[1] >= 0) (void)!write(wake_[1], &c, 1);
  }

  void Close() override {
    for (int *fd : {&fd_, &wake_[0], &wake_[1]}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
  }

 private:
  int fd_ = -1;
  int wake_[2] = {-1, -1};
};

}  // namespace

std::unique_ptr<FilterTransport> MakeFilterTransport() {
  return std::unique_ptr<FilterTransport>(new MacFilterTransport());
}
std::unique_ptr<KevTransport> MakeKevTransport() {
  return std::unique_ptr<KevTransport>(new MacKevTransport());
}

}  // namespace nke
