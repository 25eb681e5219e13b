// Linux transport: the emulator's endpoints (native/emu/include/nke_emu_proto.h).
// ctl.sock is the user client (request/reply datagrams, shared memory and an
// eventfd passed at open); kev.sock is the emulated PF_SYSTEM event socket.
#include "transport.h"

#include <nke_emu_proto.h>
#include <nke_rundir.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

namespace nke {
namespace {

// The emulator's runtime directory, resolved by the code nke-emud and the
// shim use (nke_rundir.h).
std::string EmuDir() {
  char dir[PATH_MAX];
  if (!nke_rundir_resolve(dir, sizeof(dir)))
    throw TransportError("NKE_BAD_PATH", "the emulator's runtime directory path is longer than " +
                                             std::to_string(sizeof(dir) - 1) + " bytes; set " +
                                             NKE_EMU_DIR_ENV " to a shorter one");
  return dir;
}

std::string Errno(const std::string &what, int err) { return what + ": " + strerror(err); }

// What a refused client is told: the uid nke-emud saw, and whom it serves.
TransportError NotPermitted(uint32_t peer_uid, const std::string &served_by) {
  return TransportError("NKE_NOT_PERMITTED",
                        "not permitted by the filter (uid " + std::to_string(peer_uid) + "): the nke-emud in " +
                            EmuDir() + " serves " + served_by +
                            " only; run this as that user or root, or start your own nke-emud with " +
                            NKE_EMU_DIR_ENV " set to a directory of yours");
}

// Connects a SOCK_SEQPACKET socket to dir/name, only when the directory and
// the listener are private to this user (nke_rundir.h), translating the
// failures into the causes a user can act on.
int ConnectEndpoint(const std::string &name) {
  std::string path = EmuDir() + "/" + name;
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) throw TransportError("NKE_SYSTEM", Errno("socket(AF_UNIX)", errno));
  char why[NKE_RUNDIR_WHY_MAX];
  if (nke_rundir_connect(fd, path.c_str(), why, sizeof(why)) == 0) return fd;
  int err = errno;
  close(fd);
  if (err == EPERM && why[0]) throw TransportError("NKE_NOT_PRIVATE", why);
  if (err == ENAMETOOLONG) throw TransportError("NKE_BAD_PATH", why);
  if (err == ENOENT || err == ECONNREFUSED)
    throw TransportError("NKE_EMU_NOT_RUNNING",
                         "the NKE emulator is not running (no nke-emud listening on " + path +
                             "); start native/emu/build/nke-emud or set " NKE_EMU_DIR_ENV);
  if (err == EACCES || err == EPERM)
    throw TransportError("NKE_NOT_PERMITTED",
                         "not permitted to connect to " + path + " (nke-emud runs as another user)");
  throw TransportError("NKE_SYSTEM", Errno("connect " + path, err));
}

class LinuxFilterTransport final : public FilterTransport {
 public:
  ~LinuxFilterTransport() override { Close(); }

  nke_open_reply Open() override {
    ctl_ = ConnectEndpoint(NKE_EMU_CTL_SOCK);
    abort_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (abort_fd_ < 0) throw TransportError("NKE_SYSTEM", Errno("eventfd", errno));

    nke_open_request req{};
    req.abi_version = NKE_ABI_VERSION;
    req.flags = NKE_OPEN_F_NONE;
    req.client_pid = getpid();
    nke_open_reply reply{};
    size_t outlen = sizeof(reply);
    int fds[3] = {-1, -1, -1};
    uint32_t st = Exchange(NKE_SEL_OPEN, &req, sizeof(req), &reply, &outlen, fds);
    // Take ownership of whatever descriptors arrived before judging the status.
    queue_fd_ = fds[0];
    buffers_fd_ = fds[1];
    notify_fd_ = fds[2];
    if (st == NKE_ERR_VERSION)
      throw TransportError("NKE_VERSION", "ABI version mismatch: this addon speaks version " +
                                              std::to_string(NKE_ABI_VERSION) + ", the emulator " +
                                              std::to_string(reply.abi_version) +
                                              "; rebuild both from the same tree");
    if (st == NKE_ERR_NOT_PERMITTED) {
      // The reply carries an nke_emu_refusal (nke_emu_proto.h, Refusal).
      nke_emu_refusal why{};
      if (outlen == sizeof(why)) {
        memcpy(&why, &reply, sizeof(why));
        throw NotPermitted(why.peer_uid, "uid " + std::to_string(why.filter_uid) + " and root");
      }
      throw NotPermitted(getuid(), "another user");
    }
    if (st == NKE_ERR_BUSY)
      throw TransportError("NKE_BUSY", "another client is already connected to the emulator");
    if (st != NKE_OK)
      throw TransportError(ErrorName(st), std::string("open refused: ") + ErrorMeaning(st));
    if (outlen != sizeof(reply))
      throw TransportError("NKE_PROTOCOL", "open reply has " + std::to_string(outlen) +
                                               " bytes, expected " + std::to_string(sizeof(reply)));
    if (queue_fd_ < 0 || buffers_fd_ < 0 || notify_fd_ < 0)
      throw TransportError("NKE_PROTOCOL", "open reply did not carry the three descriptors");
    if (reply.abi_version != NKE_ABI_VERSION)
      throw TransportError("NKE_VERSION", "ABI version mismatch: addon " +
                                              std::to_string(NKE_ABI_VERSION) + ", emulator " +
                                              std::to_string(reply.abi_version));
    if (reply.queue_data_size != NKE_QUEUE_DATA_SIZE || reply.buffer_count != NKE_BUFFER_COUNT ||
        reply.buffer_size != NKE_BUFFER_SIZE)
      throw TransportError("NKE_VERSION", "emulator geometry differs from the ABI header");

    // Sizes come from our own header, never from the peer (it could lie).
    queue_ = mmap(nullptr, NKE_QUEUE_MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, queue_fd_, 0);
    if (queue_ == MAP_FAILED) {
      queue_ = nullptr;
      throw TransportError("NKE_SYSTEM", Errno("mmap notification queue", errno));
    }
    buffers_ = mmap(nullptr, size_t(NKE_BUFFER_COUNT) * NKE_BUFFER_SIZE, PROT_READ, MAP_SHARED,
                    buffers_fd_, 0);
    if (buffers_ == MAP_FAILED) {
      buffers_ = nullptr;
      throw TransportError("NKE_SYSTEM", Errno("mmap data buffers", errno));
    }
    return reply;
  }

  nke_dq_memory *Queue() override { return static_cast<nke_dq_memory *>(queue_); }
  uint32_t QueueDataSize() const override { return NKE_QUEUE_DATA_SIZE; }
  const uint8_t *Buffers() const override { return static_cast<const uint8_t *>(buffers_); }

  uint32_t Call(uint32_t selector, const void *in, size_t inlen, void *out,
                size_t *outlen) override {
    return Exchange(selector, in, inlen, out, outlen, nullptr);
  }

  // Sends the request and returns; its reply is read (and dropped) by the
  // next Post or Exchange, before that one's own reply. The reader thread's
  // release calls so cost one send instead of a round trip through
  // nke-emud's loop, which under load was most of the reader's time and
  // kept the 64 shared buffers out of the pool (chunks passed pool-full).
  void Post(uint32_t selector, const void *in, size_t inlen) override {
    std::lock_guard<std::mutex> lock(call_mutex_);
    if (ctl_ < 0) throw TransportError("NKE_NOT_OPEN", "the filter client is closed");
    // Replies already there are taken without waiting; past kMaxPosted
    // unanswered the caller waits (the socket's buffers stay bounded).
    DrainPosted(false);
    if (posted_ >= kMaxPosted) DrainPosted(true);
    SendRequest(selector, in, inlen);
    posted_++;
  }

  WaitResult WaitForData(int timeout_ms) override {
    // ctl.sock is watched for hang-up only: its replies belong to Call().
    pollfd p[3] = {{notify_fd_, POLLIN, 0}, {abort_fd_, POLLIN, 0}, {ctl_, POLLRDHUP, 0}};
    int n = poll(p, 3, timeout_ms);
    if (n < 0) return errno == EINTR ? WaitResult::kTimeout : WaitResult::kGone;
    if (n == 0) return WaitResult::kTimeout;
    if (p[1].revents & POLLIN) {
      uint64_t v;
      (void)!read(abort_fd_, &v, sizeof(v));
      return WaitResult::kAborted;
    }
    if (p[0].revents & POLLIN) {
      uint64_t v;
      (void)!read(notify_fd_, &v, sizeof(v));
      return WaitResult::kData;
    }
    if (p[2].revents & (POLLHUP | POLLRDHUP | POLLERR)) return WaitResult::kGone;
    return WaitResult::kTimeout;
  }

  void Wake() override {
    uint64_t one = 1;
    if (abort_fd_ >= 0) (void)!write(abort_fd_, &one, sizeof(one));
  }

  void Close() override {
    std::lock_guard<std::mutex> lock(call_mutex_);
    if (queue_) munmap(queue_, NKE_QUEUE_MAP_SIZE);
    if (buffers_) munmap(buffers_, size_t(NKE_BUFFER_COUNT) * NKE_BUFFER_SIZE);
    queue_ = buffers_ = nullptr;
    for (int *fd : {&ctl_, &queue_fd_, &buffers_fd_, &notify_fd_, &abort_fd_}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
  }

 private:
  // One request datagram, one reply datagram. call_mutex_ keeps a request
  // and its reply together when JS calls and close race.
  uint32_t Exchange(uint32_t selector, const void *in, size_t inlen, void *out, size_t *outlen,
                    int fds[3]) {
    std::lock_guard<std::mutex> lock(call_mutex_);
    if (ctl_ < 0) throw TransportError("NKE_NOT_OPEN", "the filter client is closed");
    DrainPosted(true);  // earlier posts' replies come first (one thread answers, in order)
    const uint32_t seq = SendRequest(selector, in, inlen);

    // rep_: reused, not value-initialized per call (64 KiB of zeroing each time).
    std::vector<uint8_t> &rep = rep_;
    iovec iov{rep.data(), rep.size()};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 3)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    // The reply usually comes within microseconds (nke-emud answers the
    // user client first in its loop); sleeping in recvmsg and being woken
    // costs tens of microseconds more on a virtual machine whose idle CPUs
    // halt, on every verdict. So poll without sleeping for up to
    // kReplySpinNs (yielding the CPU between polls), then block.
    ssize_t r;
    const uint64_t spin_until = NowNs() + kReplySpinNs;
    for (;;) {
      mh.msg_controllen = sizeof(cbuf);
      r = recvmsg(ctl_, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
      if (NowNs() >= spin_until) {
        mh.msg_controllen = sizeof(cbuf);
        do r = recvmsg(ctl_, &mh, MSG_CMSG_CLOEXEC);
        while (r < 0 && errno == EINTR);
        break;
      }
      sched_yield();
    }
    if (r < 0) throw Gone(errno);
    if (r == 0) throw Gone(0);
    // Collect passed descriptors (only OPEN has them; close strays).
    for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int *got = reinterpret_cast<int *>(CMSG_DATA(c));
      for (size_t i = 0; i < n; i++) {
        if (fds && i < 3) fds[i] = got[i];
        else close(got[i]);
      }
    }
    if (size_t(r) < sizeof(nke_emu_reply))
      throw TransportError("NKE_PROTOCOL", "short reply from the emulator");
    nke_emu_reply rh;
    memcpy(&rh, rep.data(), sizeof(rh));
    if (rh.magic != NKE_EMU_MAGIC_REPLY || rh.seq != seq ||
        rh.len != size_t(r) - sizeof(nke_emu_reply))
      throw TransportError("NKE_PROTOCOL", "malformed reply from the emulator (magic/seq/len)");
    size_t cap = outlen ? *outlen : 0;
    if (outlen) *outlen = rh.len < cap ? rh.len : cap;
    if (out && outlen && *outlen) memcpy(out, rep.data() + sizeof(rh), *outlen);
    return rh.status;
  }

  // Under call_mutex_. Returns the request's seq.
  uint32_t SendRequest(uint32_t selector, const void *in, size_t inlen) {
    if (inlen > NKE_EMU_MAX_REQ - sizeof(nke_emu_req))
      throw TransportError("NKE_TOO_LARGE", "request of " + std::to_string(inlen) + " bytes");
    req_.resize(sizeof(nke_emu_req) + inlen);
    nke_emu_req h{NKE_EMU_MAGIC_REQ, selector, ++seq_, uint32_t(inlen)};
    memcpy(req_.data(), &h, sizeof(h));
    if (inlen) memcpy(req_.data() + sizeof(h), in, inlen);
    ssize_t w;
    do w = send(ctl_, req_.data(), req_.size(), MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0) throw Gone(errno);
    return h.seq;
  }

  // Under call_mutex_: reads the replies of posted requests (all of them when
  // wait, else those already arrived). Their status is not needed (Post).
  void DrainPosted(bool wait) {
    while (posted_ > 0) {
      nke_emu_reply rh;
      ssize_t r;
      do r = recv(ctl_, rep_.data(), rep_.size(), wait ? 0 : MSG_DONTWAIT);
      while (r < 0 && errno == EINTR);
      if (r < 0 && !wait && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (r < 0) throw Gone(errno);
      if (r == 0) throw Gone(0);
      if (size_t(r) < sizeof(rh)) throw TransportError("NKE_PROTOCOL", "short reply from the emulator");
      memcpy(&rh, rep_.data(), sizeof(rh));
      if (rh.magic != NKE_EMU_MAGIC_REPLY)
        throw TransportError("NKE_PROTOCOL", "malformed reply from the emulator (magic)");
      posted_--;
    }
  }

  static uint64_t NowNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
  }
  static constexpr uint64_t kReplySpinNs = 100 * 1000;

  static TransportError Gone(int err) {
    return TransportError("NKE_GONE", std::string("the emulator closed the connection") +
                                          (err ? std::string(": ") + strerror(err) : ""));
  }

  std::mutex call_mutex_;  // serializes Exchange() and Close()
  uint32_t seq_ = 0;       // protected by call_mutex_
  // Posted requests whose replies are still to be read; protected by call_mutex_.
  uint32_t posted_ = 0;
  static constexpr uint32_t kMaxPosted = 16;
  // Request and reply space, reused; protected by call_mutex_.
  std::vector<uint8_t> req_;
  std::vector<uint8_t> rep_ = std::vector<uint8_t>(sizeof(nke_emu_reply) + 64 * 1024);
  int ctl_ = -1, queue_fd_ = -1, buffers_fd_ = -1, notify_fd_ = -1, abort_fd_ = -1;
  void *queue_ = nullptr;    // shared with nke-emud (it produces, we consume)
  void *buffers_ = nullptr;  // read-only view of the data buffers
};

class LinuxKevTransport final : public KevTransport {
 public:
  ~LinuxKevTransport() override { Close(); }

  Opened Open(const std::string &vendor, uint32_t kev_class, uint32_t kev_subclass) override {
    if (vendor.empty() || vendor.size() >= NKE_EMU_KEV_VENDOR_LEN)
      throw TransportError("NKE_BAD_VENDOR", "vendor string must be 1.." +
                                                 std::to_string(NKE_EMU_KEV_VENDOR_LEN - 1) +
                                                 " bytes");
    fd_ = ConnectEndpoint(NKE_EMU_KEV_SOCK);
    abort_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (abort_fd_ < 0) throw TransportError("NKE_SYSTEM", Errno("eventfd", errno));
    nke_emu_kev_ctl c{};
    c.magic = NKE_EMU_MAGIC_REQ;
    c.op = NKE_EMU_KEV_GET_VENDOR;
    memcpy(c.vendor_string, vendor.data(), vendor.size());
    nke_emu_kev_ctl r = Ctl(c);
    if (r.status == NKE_EMU_KEV_EPERM) throw NotPermitted(r.vendor_code, "its own user");
    if (r.status == NKE_EMU_KEV_ENOENT)
      throw TransportError("NKE_VENDOR_NOT_REGISTERED",
                           "no kernel-event vendor \"" + vendor +
                               "\" registered (the emulator has not registered it)");
    if (r.status != NKE_EMU_KEV_OK)
      throw TransportError("NKE_SYSTEM", "vendor lookup failed: " + std::string(strerror(int(r.status))));
    Opened o{r.vendor_code, r.msg_limit};
    nke_emu_kev_ctl f{};
    f.magic = NKE_EMU_MAGIC_REQ;
    f.op = NKE_EMU_KEV_SET_FILTER;
    f.vendor_code = o.vendor_code;
    f.kev_class = kev_class;
    f.kev_subclass = kev_subclass;
    r = Ctl(f);
    if (r.status != NKE_EMU_KEV_OK)
      throw TransportError("NKE_SYSTEM", "event filter refused: " + std::string(strerror(int(r.status))));
    if (r.msg_limit) o.msg_limit = r.msg_limit;
    return o;
  }

  long Receive(void *buf, size_t cap, int timeout_ms) override {
    pollfd p[2] = {{fd_, POLLIN, 0}, {abort_fd_, POLLIN, 0}};
    int n = poll(p, 2, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) return 0;
      throw TransportError("NKE_SYSTEM", Errno("poll", errno));
    }
    if (n == 0) return 0;
    if (p[1].revents & POLLIN) return -1;
    ssize_t r = recv(fd_, buf, cap, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (r <= 0) throw TransportError("NKE_GONE", "the emulator closed the event socket");
    return long(r);
  }

  void Wake() override {
    uint64_t one = 1;
    if (abort_fd_ >= 0) (void)!write(abort_fd_, &one, sizeof(one));
  }

  void Close() override {
    if (fd_ >= 0) close(fd_);
    if (abort_fd_ >= 0) close(abort_fd_);
    fd_ = abort_fd_ = -1;
  }

 private:
  nke_emu_kev_ctl Ctl(const nke_emu_kev_ctl &req) {
    if (send(fd_, &req, sizeof(req), MSG_NOSIGNAL) != ssize_t(sizeof(req)))
      throw TransportError("NKE_GONE", Errno("send to kev.sock", errno));
    // Events are not delivered before SET_FILTER succeeds, so the next
    // datagram is the reply.
    nke_emu_kev_ctl rep{};
    ssize_t r = recv(fd_, &rep, sizeof(rep), 0);
    if (r != ssize_t(sizeof(rep)) || rep.magic != NKE_EMU_MAGIC_REPLY || rep.op != req.op)
      throw TransportError("NKE_PROTOCOL", "malformed reply on kev.sock");
    return rep;
  }

  int fd_ = -1, abort_fd_ = -1;
};

}  // namespace

std::unique_ptr<FilterTransport> MakeFilterTransport() {
  return std::make_unique<LinuxFilterTransport>();
}
std::unique_ptr<KevTransport> MakeKevTransport() { return std::make_unique<LinuxKevTransport>(); }

}  // namespace nke
