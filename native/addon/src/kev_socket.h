// KevSocket ObjectWrap: see kev_socket.cpp.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <thread>

#include "transport.h"

struct nke_kev_reasm;

namespace nke {

class KevSocket : public Napi::ObjectWrap<KevSocket> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit KevSocket(const Napi::CallbackInfo &info);
  ~KevSocket() override;

  struct Message;

 private:
  static void Deliver(Napi::Env env, Napi::Function onExec, KevSocket *self, Message *m);
  using Tsfn = Napi::TypedThreadSafeFunction<KevSocket, Message, &KevSocket::Deliver>;

  Napi::Value Open(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value Stats(const Napi::CallbackInfo &info);

  void ReaderLoop();
  void Stop();

  std::unique_ptr<KevTransport> transport_;  // as FilterClient::transport_
  // Used only by the reader thread while it runs; it publishes the counters
  // into the atomics below for Stats() on the JS thread.
  std::unique_ptr<nke_kev_reasm> reasm_;
  uint32_t timeout_ms_ = 2000;
  std::atomic<uint64_t> messages_{0}, duplicates_{0}, malformed_{0}, evicted_{0};
  Tsfn tsfn_;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  Napi::FunctionReference on_closed_;
};

}  // namespace nke
