// FilterClient ObjectWrap: see filter_client.cpp.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "capture_spill.h"
#include "transport.h"

namespace nke {

Napi::Error ToJsError(Napi::Env env, const TransportError &e);

class FilterClient : public Napi::ObjectWrap<FilterClient> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit FilterClient(const Napi::CallbackInfo &info);
  ~FilterClient() override;

  struct Message;

 private:
  static void Deliver(Napi::Env env, Napi::Function onBatch, FilterClient *self, Message *m);
  using Tsfn = Napi::TypedThreadSafeFunction<FilterClient, Message, &FilterClient::Deliver>;

  Napi::Value Open(const Napi::CallbackInfo &info);
  Napi::Value ReadChunk(const Napi::CallbackInfo &info);
  Napi::Value Respond(const Napi::CallbackInfo &info);
  Napi::Value PutData(const Napi::CallbackInfo &info);
  Napi::Value SetCapture(const Napi::CallbackInfo &info);
  Napi::Value GetState(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value IsOpen(const Napi::CallbackInfo &info);
  Napi::Value CaptureWrite(const Napi::CallbackInfo &info);
  Napi::Value CaptureStatus(const Napi::CallbackInfo &info);

  void ReaderLoop();
  void Stop();
  void RequireOpen(Napi::Env env);
  void CallWith(const Napi::CallbackInfo &info, uint32_t selector, const char *what, size_t max);

  // Owned by the JS thread; the reader thread uses it between Open() and
  // Stop()'s join, during which the JS thread does not replace or close it.
  std::unique_ptr<FilterTransport> transport_;
  Tsfn tsfn_;
  std::thread reader_;
  std::atomic<bool> stop_{false};       // JS thread sets, reader reads
  // open()'s releaseReported: written before the reader thread starts (its
  // constructor orders the write before the thread's reads), then read-only.
  bool release_reported_ = false;
  // open()'s capture option: where every data chunk's bytes go (the capture
  // history). Set before the reader starts, reset after it joined; the
  // reader and the JS thread (captureWrite) both write through it.
  std::shared_ptr<CaptureSpill> spill_;
  Napi::FunctionReference on_closed_;  // JS thread only
};

}  // namespace nke
