// KevSocket: a kernel-event socket (PF_SYSTEM/SYSPROTO_EVENT on macOS, the
// emulator's kev.sock on Linux) opened by vendor string. Its own thread
// receives kern_event_msg datagrams, reassembles the chunked exec messages
// with kext/core's reassembler (nke_kev.c) and delivers exec records to JS in
// batches through a ThreadSafeFunction. Incomplete execs (a chunk lost or
// late) are delivered too, marked complete=false.
#include "kev_socket.h"

#include <nke_core.h>

#include "filter_client.h"  // ToJsError

#include <chrono>
#include <cstring>
#include <vector>

namespace nke {

namespace {
uint64_t NowMs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}
}  // namespace

// Reader -> JS. Same ownership rule as FilterClient::Message.
struct KevSocket::Message {
  bool closed = false;
  std::vector<nke_exec_record> execs;
  std::string code, message;
};

Napi::Function KevSocket::Init(Napi::Env env) {
  return DefineClass(env, "KevSocket",
                     {
                         InstanceMethod<&KevSocket::Open>("open"),
                         InstanceMethod<&KevSocket::Close>("close"),
                         InstanceMethod<&KevSocket::Stats>("stats"),
                     });
}

KevSocket::KevSocket(const Napi::CallbackInfo &info) : Napi::ObjectWrap<KevSocket>(info) {}
KevSocket::~KevSocket() { Stop(); }

// open(vendor: string, onExecs(records: object[]), onClosed(err: Error),
//      reassemblyTimeoutMs?: number): {vendorCode, msgLimit}
Napi::Value KevSocket::Open(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsFunction() || !info[2].IsFunction())
    throw Napi::TypeError::New(
        env, "open(vendor: string, onExecs: Function, onClosed: Function, timeoutMs?: number) expected");
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsNumber()) throw Napi::TypeError::New(env, "timeoutMs must be a number");
    double t = info[3].As<Napi::Number>().DoubleValue();
    if (!(t >= 10 && t <= 600000)) throw Napi::RangeError::New(env, "timeoutMs must be 10..600000");
    timeout_ms_ = uint32_t(t);
  }
  if (transport_) {
    Napi::Error e = Napi::Error::New(env, "the event socket is already open");
    e.Set("code", "NKE_ALREADY_OPEN");
    throw e;
  }
  auto t = MakeKevTransport();
  KevTransport::Opened o;
  try {
    o = t->Open(info[0].As<Napi::String>().Utf8Value(), NKE_KEV_CLASS, NKE_KEV_SUBCLASS_EXEC);
  } catch (const TransportError &e) {
    t->Close();
    throw ToJsError(env, e);
  }
  transport_ = std::move(t);
  reasm_ = std::make_unique<nke_kev_reasm>();
  nke_kev_reasm_init(reasm_.get(), o.vendor_code, timeout_ms_);
  on_closed_ = Napi::Persistent(info[2].As<Napi::Function>());
  tsfn_ = Tsfn::New(env, info[1].As<Napi::Function>(), "nke-kev-reader", 16, 1, this);
  Ref();
  stop_ = false;
  reader_ = std::thread(&KevSocket::ReaderLoop, this);
  Napi::Object r = Napi::Object::New(env);
  r.Set("vendorCode", o.vendor_code);
  r.Set("msgLimit", o.msg_limit);
  return r;
}

void KevSocket::ReaderLoop() {
  // A kern_event_msg is at most the emulated MLEN; a generous buffer makes an
  // oversized one arrive whole so the reassembler can reject it as malformed.
  std::vector<uint8_t> buf(4096);
  auto batch = std::make_unique<Message>();
  auto collect = [](void *arg, const nke_exec_record *rec) {
    static_cast<Message *>(arg)->execs.push_back(*rec);
  };
  auto flush = [&]() -> bool {
    if (batch->execs.empty()) return true;
    Message *m = batch.release();
    if (tsfn_.BlockingCall(m) != napi_ok) {
      delete m;
      return false;
    }
    batch = std::make_unique<Message>();
    return true;
  };
  while (!stop_) {
    long n;
    try {
      n = transport_->Receive(buf.data(), buf.size(), 250);
    } catch (const TransportError &e) {
      flush();
      auto *m = new Message{true, {}, e.code(), e.what()};
      if (tsfn_.BlockingCall(m) != napi_ok) delete m;
      return;
    }
    if (n < 0) return;  // Wake(): closing
    uint64_t now = NowMs();
    if (n > 0) {
      messages_++;
      nke_kev_reasm_feed(reasm_.get(), buf.data(), uint32_t(n), now, collect, batch.get());
    }
    nke_kev_reasm_expire(reasm_.get(), now, collect, batch.get());
    duplicates_ = reasm_->duplicates;
    malformed_ = reasm_->malformed;
    evicted_ = reasm_->evicted;
    // Exec events are few: deliver what completed at once (flush is a no-op
    // when nothing did).
    if (!flush()) return;
  }
}

void KevSocket::Deliver(Napi::Env env, Napi::Function onExecs, KevSocket *self, Message *m) {
  std::unique_ptr<Message> own(m);
  if (env == nullptr) return;
  if (m->closed) {
    if (!self->on_closed_.IsEmpty()) {
      Napi::Error e = Napi::Error::New(env, m->message);
      e.Set("code", m->code);
      self->on_closed_.Call({e.Value()});
    }
    return;
  }
  Napi::Array arr = Napi::Array::New(env, m->execs.size());
  for (size_t i = 0; i < m->execs.size(); i++) {
    const nke_exec_record &r = m->execs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("execId", r.exec_id);
    o.Set("pid", r.pid);
    o.Set("ppid", r.ppid);
    o.Set("uid", r.uid);
    o.Set("flags", uint32_t(r.flags));
    o.Set("complete", r.complete);
    o.Set("pathLen", r.path_len);
    o.Set("chunkCount", r.chunk_count);
    o.Set("receivedMask", Napi::BigInt::New(env, r.received_mask));
    // Incomplete paths have zero-filled gaps; hand over exactly path_len bytes.
    uint32_t len = r.path_len < NKE_PATH_MAX ? r.path_len : NKE_PATH_MAX - 1;
    o.Set("path", Napi::Buffer<char>::Copy(env, r.path, len));
    arr.Set(uint32_t(i), o);
  }
  onExecs.Call({arr});
}

void KevSocket::Stop() { StopReader(transport_, stop_, tsfn_, reader_); }

Napi::Value KevSocket::Close(const Napi::CallbackInfo &info) {
  bool was_open = transport_ != nullptr;
  Stop();
  if (was_open) {
    on_closed_.Reset();
    Unref();
  }
  return info.Env().Undefined();
}

Napi::Value KevSocket::Stats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("messages", double(messages_.load()));
  o.Set("duplicates", double(duplicates_.load()));
  o.Set("malformed", double(malformed_.load()));
  o.Set("evicted", double(evicted_.load()));
  return o;
}

}  // namespace nke
