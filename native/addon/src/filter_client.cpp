// FilterClient: the user client of the filter (kext or emulator) as a JS
// object. open() connects and maps the shared memory; a reader thread drains
// the notification queue and hands batches of raw records (one Buffer per
// batch) to JS through a ThreadSafeFunction; JS decodes them with
// extension/src/shared/abi.ts and answers with respond()/putData().
#include "filter_client.h"

#include <nke_core.h>

#include <chrono>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace nke {

namespace {

// Largest batch handed to JS at once: big enough to amortize the hop to the
// JS thread, small enough that a burst does not stall the event loop.
constexpr size_t kBatchBytes = 64 * 1024;
// While JS is behind, a batch keeps growing up to this (see flush()).
constexpr size_t kMaxBatchBytes = 1024 * 1024;
// ThreadSafeFunction queue length. When it is full (JS behind), the reader
// keeps its batch and goes on draining (see flush() in ReaderLoop); only past
// kMaxBatchBytes does it block, and then the filter's queue fills and the
// filter counts lost notifications (it never blocks the traffic: fail-open).
constexpr size_t kTsfnQueue = 32;

// steady_clock: CLOCK_MONOTONIC on Linux, the clock of nke-emud's record
// times and of Node's process.hrtime (portable; the value is diagnostic only).
uint64_t MonotonicNs() {
  return uint64_t(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

Napi::Error MakeError(Napi::Env env, const std::string &code, const std::string &message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

}  // namespace

Napi::Error ToJsError(Napi::Env env, const TransportError &e) {
  return MakeError(env, e.code(), e.what());
}

// A message from the reader thread to JS. Ownership: allocated by the reader,
// owned by the TSFN queue until the JS-thread callback deletes it (or the
// callback runs with env == nullptr on abort and deletes it).
struct FilterClient::Message {
  enum Kind { kBatch, kClosed } kind;
  std::vector<uint8_t> bytes;  // kBatch: records, each nke_nt_hdr.size long
  uint32_t skipped = 0;        // kBatch: malformed entries dropped from this batch
  uint64_t wake_ns = 0;        // kBatch: CLOCK_MONOTONIC when the reader woke for it
  std::string code, message;   // kClosed: why the reader stopped
  // kBatch with a capture spill: per data record, in record order, its
  // chunk_id (u64) and the logical spill position of its bytes (i64, -1
  // when they were not kept): 16 bytes each, little-endian.
  std::vector<uint8_t> captured;
};

Napi::Function FilterClient::Init(Napi::Env env) {
  return DefineClass(env, "FilterClient",
                     {
                         InstanceMethod<&FilterClient::Open>("open"),
                         InstanceMethod<&FilterClient::ReadChunk>("readChunk"),
                         InstanceMethod<&FilterClient::Respond>("respond"),
                         InstanceMethod<&FilterClient::PutData>("putData"),
                         InstanceMethod<&FilterClient::SetCapture>("setCapture"),
                         InstanceMethod<&FilterClient::GetState>("getState"),
                         InstanceMethod<&FilterClient::Close>("close"),
                         InstanceMethod<&FilterClient::CaptureWrite>("captureWrite"),
                         InstanceMethod<&FilterClient::CaptureStatus>("captureStatus"),
                         InstanceAccessor<&FilterClient::IsOpen>("isOpen"),
                     });
}

FilterClient::FilterClient(const Napi::CallbackInfo &info) : Napi::ObjectWrap<FilterClient>(info) {}

FilterClient::~FilterClient() { Stop(); }

// open(onBatch(records: Buffer, skipped: number, wakeNs: number), onClosed(err: Error),
//      options?: {releaseReported?: boolean})
// releaseReported: the reader thread itself gives back the buffers of every
// chunk that is only reported (not held), right after dequeuing it, without
// waiting for the hop to JS; JS must then not release them (it never reads
// a reported chunk's bytes). Under a flood of reported chunks this keeps the
// 64 buffers free while the JS thread is busy (GC, a spawn, a burst).
Napi::Value FilterClient::Open(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsFunction() || !info[1].IsFunction())
    throw Napi::TypeError::New(env, "open(onBatch: Function, onClosed: Function, options?: object) expected");
  bool release_reported = false;
  std::shared_ptr<CaptureSpill> spill;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsObject()) throw Napi::TypeError::New(env, "open: options must be an object");
    Napi::Value v = info[2].As<Napi::Object>().Get("releaseReported");
    if (!v.IsUndefined()) {
      if (!v.IsBoolean()) throw Napi::TypeError::New(env, "open: options.releaseReported must be a boolean");
      release_reported = v.As<Napi::Boolean>().Value();
    }
    // capture: {fd, size, head}: the capture history's ring file (see capture_spill.h).
    Napi::Value c = info[2].As<Napi::Object>().Get("capture");
    if (!c.IsUndefined()) {
      auto num = [&](const char *k) -> double {
        Napi::Value x = c.IsObject() ? c.As<Napi::Object>().Get(k) : Napi::Value();
        if (x.IsEmpty() || !x.IsNumber())
          throw Napi::TypeError::New(env, std::string("open: options.capture.") + k + " must be a number");
        double d = x.As<Napi::Number>().DoubleValue();
        if (!(d >= 0) || d != double(uint64_t(d)) || d > 9007199254740991.0)
          throw Napi::RangeError::New(env, std::string("open: options.capture.") + k +
                                               " must be an integer >= 0");
        return d;
      };
      double fd = num("fd"), size = num("size"), head = num("head");
      if (size < 1 || fd > 0x7fffffff)
        throw Napi::RangeError::New(env, "open: options.capture needs an open fd and size >= 1");
      spill = std::make_shared<CaptureSpill>(int(fd), uint64_t(size), uint64_t(head));
      if (!spill->ok())
        throw MakeError(env, "NKE_CAPTURE_FILE", "open: cannot use the capture history file descriptor " +
                                                      std::to_string(int(fd)) + ": " + strerror(errno));
    }
  }
  if (transport_) throw MakeError(env, "NKE_ALREADY_OPEN", "the filter client is already open");

  auto t = MakeFilterTransport();
  nke_open_reply reply;
  try {
    reply = t->Open();
  } catch (const TransportError &e) {
    t->Close();
    throw ToJsError(env, e);
  }
  transport_ = std::move(t);
  on_closed_ = Napi::Persistent(info[1].As<Napi::Function>());
  tsfn_ = Tsfn::New(env, info[0].As<Napi::Function>(), "nke-filter-reader", kTsfnQueue, 1, this);
  // Keep this object (and so its callbacks) alive while the reader runs.
  Ref();
  stop_ = false;
  release_reported_ = release_reported;
  spill_ = std::move(spill);
  reader_ = std::thread(&FilterClient::ReaderLoop, this);

  Napi::Object o = Napi::Object::New(env);
  o.Set("abiVersion", reply.abi_version);
  o.Set("bufferCount", reply.buffer_count);
  o.Set("bufferSize", reply.buffer_size);
  o.Set("queueDataSize", reply.queue_data_size);
  o.Set("kevVendorCode", reply.kev_vendor_code);
  o.Set("kevMsgLimit", reply.kev_msg_limit);
  o.Set("sessionId", Napi::BigInt::New(env, reply.session_id));
  return o;
}

// Runs on the reader thread. Touches only transport_ (queue memory, wait)
// and tsfn_; stop_ is the only state shared with the JS thread.
void FilterClient::ReaderLoop() {
  nke_dq_memory *q = transport_->Queue();
  const uint32_t qsize = transport_->QueueDataSize();
  uint8_t rec[256];
  auto batch = std::make_unique<Message>();
  batch->kind = Message::kBatch;
  // When this thread last woke for data (the same clock as the records'
  // time_ns and Node's process.hrtime): per-hop latency for diagnosis.
  uint64_t wake_ns = MonotonicNs();
  // NKE_ADDON_PROFILE set: where this thread's time went, printed to stderr
  // when it stops (bench/diagnosis only; a few clock reads per wake-up).
  const bool prof = getenv("NKE_ADDON_PROFILE") != nullptr;
  using Clock = std::chrono::steady_clock;
  struct {
    double wait = 0, drain = 0, release = 0, hand = 0;
    uint64_t wakes = 0, records = 0, release_calls = 0;
  } pf;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  auto report = [&]() {
    if (!prof) return;
    fprintf(stderr,
            "nke-addon reader: %llu wake-ups, %llu records, %llu release calls; seconds waiting %.3f, "
            "draining %.3f, in release calls %.3f, handing to JS %.3f\n",
            (unsigned long long)pf.wakes, (unsigned long long)pf.records, (unsigned long long)pf.release_calls,
            pf.wait, pf.drain, pf.release, pf.hand);
  };
  struct Reporter {
    std::function<void()> f;
    ~Reporter() { f(); }
  } reporter{report};

  // Hands the batch to JS. wait=false: when JS is behind (the TSFN queue is
  // full) the batch is kept and grows, and this thread goes on draining the
  // filter's queue and giving buffers back; blocking here instead kept
  // every buffer of the records behind it out of the pool, and the filter
  // passed chunks pool-full while JS caught up. wait=true past
  // kMaxBatchBytes: then the filter's own queue takes the overflow (and
  // counts what it loses). Returns kSent, kKept or kAborted (close()).
  enum { kSent, kKept, kAborted };
  size_t stage_from = 0;  // batch->captured entries from here hold stage offsets (see commit)
  auto flush = [&](bool wait) -> int {
    if (batch->bytes.empty() && batch->skipped == 0) return kSent;
    Clock::time_point t = prof ? Clock::now() : Clock::time_point{};
    napi_status st = wait ? tsfn_.BlockingCall(batch.get()) : tsfn_.NonBlockingCall(batch.get());
    if (prof) pf.hand += since(t);
    if (st == napi_queue_full && !wait) return kKept;
    if (st != napi_ok) return kAborted;  // nobody will take it: batch still owns it
    (void)batch.release();               // the TSFN queue owns it now
    batch = std::make_unique<Message>();
    batch->kind = Message::kBatch;
    batch->wake_ns = wake_ns;
    stage_from = 0;
    return kSent;
  };
  auto closed = [&](const std::string &code, const std::string &message) {
    auto *m = new Message{Message::kClosed, {}, 0, 0, code, message, {}};
    if (tsfn_.BlockingCall(m) != napi_ok) delete m;
  };

  // releaseReported: one NKE_SEL_RESPOND of releases only, built here.
  // transport_->Call is serialized inside the transport, so this thread and
  // the JS thread may both call it.
  struct {
    nke_response_hdr hdr;
    nke_release rel[NKE_RESPONSE_MAX_RELEASES];
  } resp;
  uint32_t nrel = 0;
  auto send_releases = [&]() {
    if (nrel == 0) return;
    Clock::time_point t = prof ? Clock::now() : Clock::time_point{};
    pf.release_calls++;
    resp.hdr = nke_response_hdr{NKE_ABI_VERSION, uint32_t(sizeof(resp.hdr) + nrel * sizeof(nke_release)),
                                0, uint16_t(nrel), 0};
    try {
      // A refusal changes nothing in the filter; its deadlines still release
      // the chunk (fail-open), so there is nothing better to do with it here.
      // Posted: no wait for the answer (see FilterTransport::Post).
      transport_->Post(NKE_SEL_RESPOND, &resp, resp.hdr.size);
    } catch (const TransportError &) {
      // The filter went away: WaitForData reports it next.
    }
    nrel = 0;
    if (prof) pf.release += since(t);
  };


  // With a capture spill: the chunk's bytes are copied out of the shared
  // buffers now, while they are still the client's (before the release just
  // below for a reported chunk; a held one's are released by JS later), into
  // a staging buffer; commit() sends the releases first and then writes what
  // was staged to the history file with one write, before the batch goes to
  // JS. A write a chunk (pwrite, tens of microseconds each on a busy disk)
  // kept the buffers of the whole drain out of the pool meanwhile, and the
  // filter passed chunks unreported (pool full). Each record's position is
  // handed to JS with the batch. A record whose buffer list is out of range
  // (a hostile queue) has nothing read: -1.
  const uint8_t *pool = transport_->Buffers();
  std::vector<uint8_t> stage;   // bytes copied, not yet written to the spill
  const size_t stage_limit = spill_ ? size_t(std::min<uint64_t>(4u << 20, std::max<uint64_t>(spill_->size() / 4, 1))) : 0;
  auto commit = [&]() {
    send_releases();
    if (!spill_) return;
    int64_t at = -1;
    if (!stage.empty()) {
      CaptureSpill::Piece piece{stage.data(), stage.size()};
      at = spill_->Write(&piece, 1);
    }
    for (size_t k = stage_from; k + 16 <= batch->captured.size(); k += 16) {
      int64_t off;
      memcpy(&off, &batch->captured[k + 8], 8);
      int64_t pos = off < 0 || at < 0 ? -1 : at + off;
      memcpy(&batch->captured[k + 8], &pos, 8);
    }
    stage.clear();
    stage_from = batch->captured.size();
  };
  auto capture = [&](const uint8_t *r) {
    nke_nt_data d;
    memcpy(&d, r, sizeof(d));
    bool valid = d.nbuffers >= 1 && d.nbuffers <= NKE_CHUNK_MAX_BUFFERS &&
                 uint64_t(d.size) <= uint64_t(d.nbuffers) * NKE_BUFFER_SIZE;
    for (uint32_t i = 0; valid && i < d.nbuffers; i++)
      if (d.buffers[i] >= NKE_BUFFER_COUNT) valid = false;
    if (valid && !stage.empty() && stage.size() + d.size > stage_limit) commit();
    int64_t off = valid ? int64_t(stage.size()) : -1;
    size_t left = valid ? d.size : 0;
    for (uint32_t i = 0; i < d.nbuffers && left > 0; i++) {
      size_t take = std::min<size_t>(left, NKE_BUFFER_SIZE);
      const uint8_t *src = pool + size_t(d.buffers[i]) * NKE_BUFFER_SIZE;
      stage.insert(stage.end(), src, src + take);
      left -= take;
    }
    uint8_t entry[16];
    memcpy(entry, &d.chunk_id, 8);
    memcpy(entry + 8, &off, 8);
    batch->captured.insert(batch->captured.end(), entry, entry + 16);
  };

  while (!stop_) {
    // The filter signals only on empty -> non-empty: drain completely.
    Clock::time_point t_drain = prof ? Clock::now() : Clock::time_point{};
    for (;;) {
      uint32_t len = 0;
      int r = nke_dq_dequeue(q, qsize, rec, sizeof(rec), &len);
      if (r == NKE_DQ_EMPTY) break;
      if (r == NKE_DQ_TOOBIG) {
        batch->skipped++;
        continue;
      }
      if (r == NKE_DQ_CORRUPT) {
        commit();
        flush(true);
        closed("NKE_QUEUE_CORRUPT", "the notification queue is corrupt (head/tail/size out of range)");
        return;
      }
      nke_nt_hdr h;
      if (len < sizeof(h)) {
        batch->skipped++;
        continue;
      }
      memcpy(&h, rec, sizeof(h));
      if (h.size != len || len % 8 != 0) {
        batch->skipped++;
        continue;
      }
      if (spill_ && h.type == NKE_NT_DATA && len >= sizeof(nke_nt_data)) capture(rec);
      if (release_reported_ && h.type == NKE_NT_DATA && !(h.flags & NKE_DATA_F_HELD) &&
          len >= sizeof(nke_nt_data)) {
        nke_nt_data d;
        memcpy(&d, rec, sizeof(d));
        for (uint32_t i = 0; i < d.nbuffers && i < NKE_CHUNK_MAX_BUFFERS; i++) {
          resp.rel[nrel++] = nke_release{d.chunk_id, d.buffers[i], 0, 0};
        }
        if (nrel > NKE_RESPONSE_MAX_RELEASES - NKE_CHUNK_MAX_BUFFERS) send_releases();
      }
      pf.records++;
      batch->bytes.insert(batch->bytes.end(), rec, rec + len);
      if (batch->bytes.size() >= kBatchBytes) {
        commit();
        if (flush(batch->bytes.size() >= kMaxBatchBytes) == kAborted) return;
      }
    }
    if (prof) pf.drain += since(t_drain);
    commit();
    int f = flush(false);
    if (f == kAborted) return;
    Clock::time_point t_wait = prof ? Clock::now() : Clock::time_point{};
    // A kept batch is retried after at most 1 ms even if no record comes.
    WaitResult w = transport_->WaitForData(f == kKept ? 1 : 500);
    if (prof) {
      pf.wait += since(t_wait);
      pf.wakes++;
    }
    if (w == WaitResult::kData) {
      wake_ns = MonotonicNs();
      if (batch->bytes.empty()) batch->wake_ns = wake_ns;  // a kept batch keeps its first wake
    }
    switch (w) {
      case WaitResult::kData:
      case WaitResult::kTimeout:
        break;
      case WaitResult::kAborted:
        return;
      case WaitResult::kGone:
        closed("NKE_GONE", "the filter went away (emulator stopped or kext unloaded)");
        return;
    }
  }
}

// JS thread. env is nullptr when the TSFN is torn down by close() with
// messages still queued: then only free them.
void FilterClient::Deliver(Napi::Env env, Napi::Function onBatch, FilterClient *self, Message *m) {
  std::unique_ptr<Message> own(m);
  if (env == nullptr) return;
  if (m->kind == Message::kBatch) {
    // Copied, not wrapped as an external buffer: Electron (VS Code's
    // Electron-as-Node) forbids external ArrayBuffers, and one memcpy per
    // batch (kBatchBytes, up to kMaxBatchBytes when JS was behind) costs
    // nothing next to the hop to JS.
    Napi::Buffer<uint8_t> b = Napi::Buffer<uint8_t>::Copy(env, m->bytes.data(), m->bytes.size());
    Napi::Value captured = env.Undefined();
    if (!m->captured.empty())
      captured = Napi::Buffer<uint8_t>::Copy(env, m->captured.data(), m->captured.size());
    onBatch.Call(
        {b, Napi::Number::New(env, m->skipped), Napi::Number::New(env, double(m->wake_ns)), captured});
    return;
  }
  if (!self->on_closed_.IsEmpty())
    self->on_closed_.Call({MakeError(env, m->code, m->message).Value()});
}

void FilterClient::Stop() {
  StopReader(transport_, stop_, tsfn_, reader_);
  spill_.reset();  // the reader has joined: nothing writes through it any more
}

// captureWrite(bytes: Buffer): number — appends bytes (an edit's) to the
// capture history's ring, at the same head the reader thread writes at;
// returns their logical position, or -1 when they were not kept (too large
// for the ring, or the write failed: captureStatus() says why).
Napi::Value FilterClient::CaptureWrite(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer())
    throw Napi::TypeError::New(env, "captureWrite(bytes: Buffer) expected");
  RequireOpen(env);
  if (!spill_) throw MakeError(env, "NKE_NO_CAPTURE", "the filter client was opened without a capture history");
  Napi::Buffer<uint8_t> b = info[0].As<Napi::Buffer<uint8_t>>();
  CaptureSpill::Piece piece{b.Data(), b.Length()};
  return Napi::Number::New(env, double(spill_->Write(&piece, 1)));
}

// captureStatus(): {head, writeErrors, lastError} of the capture history's
// ring (undefined without one).
Napi::Value FilterClient::CaptureStatus(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!spill_) return env.Undefined();
  Napi::Object o = Napi::Object::New(env);
  o.Set("head", double(spill_->Head()));
  o.Set("writeErrors", double(spill_->write_errors()));
  o.Set("lastError", spill_->last_error());
  return o;
}

// readChunk(buffers: number[], size: number): Buffer — copies a chunk's bytes
// out of the shared buffers (valid until the chunk's buffers are released).
Napi::Value FilterClient::ReadChunk(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsNumber())
    throw Napi::TypeError::New(env, "readChunk(buffers: number[], size: number) expected");
  RequireOpen(env);
  Napi::Array list = info[0].As<Napi::Array>();
  double sz = info[1].As<Napi::Number>().DoubleValue();
  uint32_t n = list.Length();
  if (n == 0 || n > NKE_CHUNK_MAX_BUFFERS)
    throw Napi::RangeError::New(env, "a chunk spans 1.." + std::to_string(NKE_CHUNK_MAX_BUFFERS) +
                                         " buffers, got " + std::to_string(n));
  if (!(sz >= 0) || sz > double(n) * NKE_BUFFER_SIZE)
    throw Napi::RangeError::New(env, "size " + std::to_string(sz) + " does not fit in " +
                                         std::to_string(n) + " buffers");
  size_t size = size_t(sz);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, size);
  const uint8_t *base = transport_->Buffers();
  size_t done = 0;
  for (uint32_t i = 0; i < n && done < size; i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, "buffer indices must be numbers");
    double idx = v.As<Napi::Number>().DoubleValue();
    if (!(idx >= 0) || idx >= NKE_BUFFER_COUNT || idx != double(uint32_t(idx)))
      throw Napi::RangeError::New(env, "buffer index " + std::to_string(idx) + " out of range");
    size_t take = std::min<size_t>(NKE_BUFFER_SIZE, size - done);
    memcpy(out.Data() + done, base + size_t(idx) * NKE_BUFFER_SIZE, take);
    done += take;
  }
  return out;
}

// Shared by respond/putData/setCapture: the message is already encoded (abi.ts
// encoders); the filter validates it field by field and answers a distinct
// error for each kind of malformation.
void FilterClient::CallWith(const Napi::CallbackInfo &info, uint32_t selector, const char *what,
                            size_t max) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer())
    throw Napi::TypeError::New(env, std::string(what) + "(message: Buffer) expected");
  RequireOpen(env);
  Napi::Buffer<uint8_t> b = info[0].As<Napi::Buffer<uint8_t>>();
  if (b.Length() > max)
    throw Napi::RangeError::New(env, std::string(what) + ": message of " +
                                         std::to_string(b.Length()) + " bytes exceeds " +
                                         std::to_string(max));
  uint32_t st;
  try {
    st = transport_->Call(selector, b.Data(), b.Length(), nullptr, nullptr);
  } catch (const TransportError &e) {
    throw ToJsError(env, e);
  }
  if (st != NKE_OK)
    throw MakeError(env, ErrorName(st),
                    std::string(what) + " refused by the filter: " + ErrorMeaning(st) + " (" +
                        ErrorName(st) + ")");
}

Napi::Value FilterClient::Respond(const Napi::CallbackInfo &info) {
  CallWith(info, NKE_SEL_RESPOND, "respond", NKE_RESPONSE_MAX_SIZE);
  return info.Env().Undefined();
}

Napi::Value FilterClient::PutData(const Napi::CallbackInfo &info) {
  CallWith(info, NKE_SEL_PUT_DATA, "putData", sizeof(nke_put_data_hdr) + NKE_PUT_DATA_MAX_PIECE);
  return info.Env().Undefined();
}

Napi::Value FilterClient::SetCapture(const Napi::CallbackInfo &info) {
  CallWith(info, NKE_SEL_SET_CAPTURE, "setCapture", sizeof(nke_capture_config));
  return info.Env().Undefined();
}

// getState(): Buffer of one nke_filter_state.
Napi::Value FilterClient::GetState(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  RequireOpen(env);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, sizeof(nke_filter_state));
  size_t len = out.Length();
  uint32_t st;
  try {
    st = transport_->Call(NKE_SEL_GET_STATE, nullptr, 0, out.Data(), &len);
  } catch (const TransportError &e) {
    throw ToJsError(env, e);
  }
  if (st != NKE_OK)
    throw MakeError(env, ErrorName(st), std::string("getState refused: ") + ErrorMeaning(st));
  if (len != sizeof(nke_filter_state))
    throw MakeError(env, "NKE_PROTOCOL", "filter state of " + std::to_string(len) + " bytes");
  return out;
}

Napi::Value FilterClient::Close(const Napi::CallbackInfo &info) {
  bool was_open = transport_ != nullptr;
  Stop();
  if (was_open) {
    on_closed_.Reset();
    Unref();
  }
  return info.Env().Undefined();
}

Napi::Value FilterClient::IsOpen(const Napi::CallbackInfo &info) {
  return Napi::Boolean::New(info.Env(), transport_ != nullptr);
}

void FilterClient::RequireOpen(Napi::Env env) {
  if (!transport_) throw MakeError(env, "NKE_NOT_OPEN", "the filter client is not open");
}

}  // namespace nke
